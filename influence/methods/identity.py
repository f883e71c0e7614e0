"""`method="identity"`: plain gradient dot products (TracIn at one checkpoint)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from influence.gradients import per_example_grads
from influence.methods.base import Method, register
from influence.model import FunctionalModel
from influence.projection import ProjectionOptions, auto_projection_dim


@dataclass(frozen=True)
class IdentityOptions(ProjectionOptions):
    """Options of `method="identity"`: the gradient projection (see `ProjectionOptions`)."""


@register
class Identity(Method):
    """P = I: `score = φ(∇m(test))ᵀ φ(∇ℓ(train))`, φ the gradient itself or, when the n × p
    index would not fit in memory (`projection_dim="auto"`), its count-sketch. No curvature,
    no damping; cheapest and scale-dependent (large-gradient examples dominate)."""

    name = "identity"
    Options = IdentityOptions
    uses_curvature = False

    @classmethod
    def resolve_options(cls, options: dict[str, Any], fm: FunctionalModel, n_train: int | None) -> dict[str, Any]:
        return auto_projection_dim(options, fm, n_train, copies=1)

    def __init__(self, **options):
        super().__init__(**options)
        self.project = self.options.projection_for_features()

    def feature_dim(self, fm: FunctionalModel) -> int:
        return self.project.dim(fm.p)

    def features(self, fm: FunctionalModel, fn: Callable, inputs: Any, targets: Tensor) -> Tensor:
        return self.project(per_example_grads(fm, fn, inputs, targets))

    def fit(self, fm, curvature, damping, train_features) -> dict[str, Any]:
        return {"projection": self.project.kind_for(fm.p), "projection_dim": self.project.dim(fm.p)}

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def restore(self, state: dict[str, Tensor], curvature) -> None:
        pass

    def precondition(self, G: Tensor) -> tuple[Tensor, None]:
        return G, None
