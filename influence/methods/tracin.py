"""`method="tracin"`: TracIn-CP (Pruthi et al. 2020), gradient dot products summed over checkpoints.

    score[j, i] = Σ_c w_c ∇m(test_j; θ_c)ᵀ ∇ℓ(train_i; θ_c)

with θ_c the attributed parameters of checkpoint c and w_c its weight (the learning rate
around it in the paper; default 1/C, a mean). Same sign convention as the package:
positive = helpful when m is the loss. With no checkpoints it is `identity` (the current
model only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from influence.errors import InvalidArgumentError
from influence.gradients import CheckpointGradients
from influence.methods.base import Method, register
from influence.model import FunctionalModel
from influence.projection import ProjectionOptions, auto_projection_dim


@dataclass(frozen=True)
class TracInOptions(ProjectionOptions):
    """Options of `method="tracin"` (and the gradient projection of `ProjectionOptions`).

    Attributes:
        checkpoints: list of state_dicts of the model (e.g. saved during training); `None`
            uses the model as given (then this equals `method="identity"`).
        weights: one weight per checkpoint (the learning rate in the paper); default 1/C.
    """

    checkpoints: Any = None
    weights: Any = None

    def __post_init__(self):
        super().__post_init__()
        count = len(CheckpointGradients(self.checkpoints))
        if self.weights is not None and len(self.weights) != count:
            raise InvalidArgumentError(f"`weights` has {len(self.weights)} entries but there are {count} checkpoints")


@register
class TracIn(Method):
    """TracIn-CP: features are the per-checkpoint gradients concatenated, Tensor[b, C·p];
    the preconditioner scales block c by its weight w_c. No curvature, no damping."""

    name = "tracin"
    Options = TracInOptions
    uses_curvature = False

    @classmethod
    def resolve_options(cls, options: dict[str, Any], fm: FunctionalModel, n_train: int | None) -> dict[str, Any]:
        copies = len(CheckpointGradients(options.get("checkpoints")))
        return auto_projection_dim(options, fm, n_train, copies)

    def __init__(self, **options):
        super().__init__(**options)
        self.ckpts = CheckpointGradients(self.options.checkpoints)
        self.project = self.options.projection_for_features()
        weights = self.options.weights or [1.0 / len(self.ckpts)] * len(self.ckpts)
        self.weights = torch.as_tensor(weights, dtype=torch.float64)

    def feature_dim(self, fm: FunctionalModel) -> int:
        return len(self.ckpts) * self.project.dim(fm.p)

    def features(self, fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs: Any,
                 targets: Tensor) -> Tensor:
        return torch.cat([self.project(g) for g in self.ckpts.grads(fm, fn, inputs, targets)], dim=1)

    def fit(self, fm, curvature, damping, train_features) -> dict[str, Any]:
        return {"checkpoints": len(self.ckpts), "projection": self.project.kind_for(fm.p)}

    def state_dict(self) -> dict[str, Tensor]:
        return {"weights": self.weights}

    def restore(self, state: dict[str, Tensor], curvature) -> None:
        self.weights = state["weights"]

    def precondition(self, G: Tensor) -> tuple[Tensor, None]:
        blocks = G.reshape(G.shape[0], len(self.weights), -1)
        return (blocks * self.weights.to(G.dtype)[:, None]).reshape(G.shape), None
