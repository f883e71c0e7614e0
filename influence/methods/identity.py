"""`method="identity"`: plain gradient dot products (TracIn at one checkpoint)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from influence.methods.base import Method, register


@register
class Identity(Method):
    """P = I: `score = ∇m(test)ᵀ ∇ℓ(train)`. No curvature, no damping; cheapest and
    scale-dependent (large-gradient examples dominate). Same sign convention."""

    name = "identity"
    uses_curvature = False

    def fit(self, fm, curvature, damping, train_features) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def restore(self, state: dict[str, Tensor], curvature) -> None:
        pass

    def precondition(self, G: Tensor) -> tuple[Tensor, None]:
        return G, None
