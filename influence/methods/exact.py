"""`method="exact"`: the explicit p×p curvature, eigendecomposed once (small models only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from influence.curvature import Curvature
from influence.damping import (
    INDEFINITE,
    Damping,
    check_indefinite_option,
    positive_definite_damping,
)
from influence.errors import InvalidArgumentError
from influence.linalg import eigh
from influence.methods.base import Method, TrainFeatures, register
from influence.model import FunctionalModel
from influence.options import check_int


@dataclass(frozen=True)
class ExactOptions:
    """Options of `method="exact"`.

    Attributes:
        max_params: refuse models with more attributed parameters than this.
        indefinite: what to do when `H + λI` is not positive definite (curvature="hessian"
            off a convex model): "raise_damping" (default; recorded in
            `diagnostics["damping_raised"]` and warned about), "abs" (invert `|e| + λ`, as
            saddle-free Newton does) or "warn" (keep λ; queries warn).
    """

    max_params: int = 10_000
    indefinite: str = "raise_damping"

    def __post_init__(self):
        check_int(self.max_params, "max_params")
        check_indefinite_option(self.indefinite, "exact", INDEFINITE)


@register
class Exact(Method):
    """Builds the p×p curvature once (`Curvature.dense`: for the GGN from per-example
    Jacobians, not p curvature products) and inverts it through `eigh`:

        P = V diag(1/(e + λ)) Vᵀ.

    Exact up to floating point; O(p²) memory and O(p³) time, so for p up to a few
    thousand (`max_params`). The damping ratio applies to the exact mean eigenvalue
    trace(H)/p. Diagnostics: the spectrum's extremes, negative eigenvalues of H, the
    condition number of H + λI.
    """

    name = "exact"
    Options = ExactOptions

    def fit(self, fm: FunctionalModel, curvature: Curvature | None, damping: Damping,
            train_features: TrainFeatures) -> dict[str, Any]:
        if curvature.p > self.options.max_params:
            raise InvalidArgumentError(
                f"method='exact' builds a {curvature.p}×{curvature.p} matrix, above max_params="
                f"{self.options.max_params}; use method='auto' (or raise max_params)")
        H = curvature.dense()
        eigenvalues, eigenvectors = eigh(H)
        lam, source = damping.resolve(lambda: float(eigenvalues.mean()))
        lam, info = positive_definite_damping(self.name, self.options.indefinite, lam, source, float(eigenvalues[0]),
                                              float(eigenvalues[-1]))
        self.restore({"eigenvalues": eigenvalues, "eigenvectors": eigenvectors,
                      "damping": torch.tensor(lam, dtype=torch.float64)}, curvature)
        shifted = 1.0 / self.inverse_eigenvalues
        return {**info,
                "eigenvalue_min": float(eigenvalues[0]), "eigenvalue_max": float(eigenvalues[-1]),
                "negative_eigenvalues": int((eigenvalues < 0).sum()),
                "negative_curvature": bool((shifted <= 0).any()),
                "condition_number": float(shifted.abs().max() / shifted.abs().min().clamp_min(1e-300))}

    def state_dict(self) -> dict[str, Tensor]:
        return {"eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors,
                "damping": torch.tensor(self.damping, dtype=torch.float64)}

    def restore(self, state: dict[str, Tensor], curvature: Curvature | None) -> None:
        self.eigenvalues, self.eigenvectors = state["eigenvalues"], state["eigenvectors"]
        self.damping = float(state["damping"])
        spectrum = self.eigenvalues.abs() if self.options.indefinite == "abs" else self.eigenvalues
        self.inverse_eigenvalues = 1.0 / (spectrum + self.damping)

    def precondition(self, G: Tensor) -> tuple[Tensor, None]:
        Q = self.eigenvectors
        return ((G.to(Q.dtype) @ Q) * self.inverse_eigenvalues) @ Q.T, None

    def self_scores(self, F: Tensor) -> tuple[Tensor, None]:
        """Σ_k (v_kᵀ φ)² / (e_k + λ): one product instead of two."""
        return ((F.to(self.eigenvectors.dtype) @ self.eigenvectors) ** 2 @ self.inverse_eigenvalues), None

    def damped_curvature(self) -> Tensor:
        """H + λI = V diag(e + λ) Vᵀ (|e| with indefinite="abs"), Tensor[p, p]."""
        V = self.eigenvectors
        return (V / self.inverse_eigenvalues) @ V.T
