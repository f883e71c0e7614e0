"""`method="exact"`: the explicit p×p curvature, eigendecomposed once (small models only)."""

from __future__ import annotations

import torch
from torch import Tensor

from influence.curvature import Curvature
from influence.errors import InvalidArgumentError
from influence.methods.base import Method, TrainFeatures, register


@register
class Exact(Method):
    """Builds `H + λI` from p curvature products and inverts it through `eigh`.

    Exact up to floating point, costs O(p²) memory and O(p³) time: for p up to about
    10⁴ (`max_params`). Diagnostics include the eigen-spectrum extremes and the number of
    negative eigenvalues of H (non-convex curvature).

    Options:
        max_params: refuse models with more attributed parameters than this.
        indefinite: what to do when `H + λI` is not positive definite (curvature="hessian"
            off a convex model): "raise_damping" (default; recorded in
            `diagnostics["damping_raised"]` and warned about), "abs" (invert `|e| + λ`, as
            saddle-free Newton does) or "warn" (keep λ; queries warn).
    """

    name = "exact"
    options = {"max_params": 10_000, "indefinite": "raise_damping"}

    def __init__(self, **options):
        super().__init__(**options)
        self._check_indefinite_option()

    def fit(self, curvature: Curvature | None, damping: float | None, train_features: TrainFeatures) -> None:
        super().fit(curvature, damping, train_features)
        if curvature.p > self.config["max_params"]:
            raise InvalidArgumentError(
                f"method='exact' builds a {curvature.p}×{curvature.p} matrix, above max_params="
                f"{self.config['max_params']}; use method='cg' (or raise max_params)"
            )
        eigenvalues, eigenvectors = torch.linalg.eigh(curvature.dense())
        self.diagnostics = {
            "eigenvalue_min": float(eigenvalues[0]),
            "eigenvalue_max": float(eigenvalues[-1]),
            "negative_eigenvalues": int((eigenvalues < 0).sum()),
        }
        self.handle_indefinite(float(eigenvalues[0]), float(eigenvalues[-1]))
        self.load_state_dict({"eigenvalues": eigenvalues, "eigenvectors": eigenvectors,
                              "damping": torch.tensor(self.damping, dtype=torch.float64)})
        shifted = 1.0 / self.inverse_eigenvalues
        self.diagnostics.update({
            "negative_curvature": bool((shifted <= 0).any()),
            "condition_number": float(shifted.abs().max() / shifted.abs().min().clamp_min(1e-300)),
        })

    def state_dict(self) -> dict[str, Tensor]:
        return {"eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors,
                "damping": torch.tensor(self.damping, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.eigenvalues, self.eigenvectors = state["eigenvalues"], state["eigenvectors"]
        self.damping = float(state["damping"])
        spectrum = self.eigenvalues.abs() if self.config["indefinite"] == "abs" else self.eigenvalues
        self.inverse_eigenvalues = 1.0 / (spectrum + self.damping)

    def precondition(self, G: Tensor) -> Tensor:
        Q = self.eigenvectors
        return ((G.to(Q.dtype) @ Q) * self.inverse_eigenvalues) @ Q.T
