"""`method="identity"`: plain gradient dot products (TracIn at one checkpoint)."""

from __future__ import annotations

from torch import Tensor

from influence.methods.base import Method, register


@register
class Identity(Method):
    """P = I: `score = ∇m(test)ᵀ ∇ℓ(train)`. No curvature, no damping; cheapest and
    scale-dependent (large-gradient examples dominate). Same sign convention."""

    name = "identity"
    uses_curvature = False

    def precondition(self, G: Tensor) -> Tensor:
        return G
