"""`method="arnoldi"`: influence in the top-r eigenspace of the curvature (Schioppa et al. 2022).

A block Lanczos iteration (full re-orthogonalisation, Rayleigh–Ritz at the end) on the
undamped curvature products `curvature.matvec` finds the r eigenpairs (u_k, e_k) of largest
|e_k|, U: Tensor[r, p]. Scores live in that r-dimensional space:

    score[j, i] = Σ_k (u_kᵀ ∇m(test_j)) (u_kᵀ ∇ℓ(train_i)) / (e_k + λ)

(same sign convention as the package: removing train_i changes m(test_j) by ≈ +score / n).
Directions outside the top-r space are dropped, as in the paper; with r = p this is `exact`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from influence.curvature import Curvature
from influence.errors import InvalidArgumentError
from influence.gradients import per_example_grads
from influence.methods.base import Method, TrainFeatures, register
from influence.model import FunctionalModel
from influence.solvers import top_eigenpairs


@register
class Arnoldi(Method):
    """Top-`rank` eigenpairs of the curvature; preconditioner `U diag(1/(e + λ)) Uᵀ`.

    Options:
        rank: eigenpairs kept (default 200, clipped to p). The eigenvalues of a trained
            network's GGN decay fast; on the digits MLP (p = 2410) rank 200 reaches LDS 0.77
            and rank 400 0.81, equal to `exact` (benchmarks/RESULTS.md).
        krylov_dim: dimension of the Krylov space searched (default `2 × rank`, clipped to
            p). Costs `krylov_dim` curvature products, made `block_size` at a time.
        block_size: directions per block-Lanczos step (batched curvature products).

    Features: φ(∇) = U ∇ (Tensor[b, rank]), so the index is rank-dimensional; the
    eigenpairs are found in `prepare`, before the training features.
    Diagnostics: the kept spectrum (`eigenvalues`, largest |e| first), `negative_eigenvalues`
    among them (curvature="hessian"), `negative_curvature` (some e + λ <= 0: the attributor
    warns), and `ritz_residual`, max ‖A u − e u‖ / max|e| over the kept pairs (small when
    the Krylov space was large enough).
        indefinite: when a kept e + λ <= 0 (curvature="hessian"): "raise_damping" (default;
            `diagnostics["damping_raised"]`, warned about), "abs" (invert |e| + λ) or "warn".
    """

    name = "arnoldi"
    features_use_curvature = True
    options = {"rank": 200, "krylov_dim": None, "block_size": 16, "indefinite": "raise_damping"}

    def __init__(self, **options):
        super().__init__(**options)
        self._check_indefinite_option()
        for key in ("rank", "block_size"):
            _check_positive_int(self.config[key], key)
        if self.config["krylov_dim"] is not None:
            _check_positive_int(self.config["krylov_dim"], "krylov_dim")
            if self.config["krylov_dim"] < self.config["rank"]:
                raise InvalidArgumentError(f"`krylov_dim` ({self.config['krylov_dim']}) must be >= `rank` "
                                           f"({self.config['rank']})")
        self.eigenvectors: Tensor | None = None

    # ------------------------------------------------------------------ fitting
    def prepare(self, curvature: Curvature) -> None:
        """Find the top eigenpairs (before the training features, which are projected on them)."""
        p = curvature.p
        rank = min(self.config["rank"], p)
        dim = min(self.config["krylov_dim"] or 2 * rank, p)
        values, vectors, residual = top_eigenpairs(curvature.matvec, p, rank, dim, self.config["block_size"],
                                                   seed=0, dtype=curvature.fm.dtype, device=curvature.fm.device)
        self.eigenvalues, self.eigenvectors = values, vectors
        self.diagnostics = {
            "rank": rank, "krylov_dim": dim, "eigenvalues": values.tolist(),
            "eigenvalue_max": float(values.abs().max()), "eigenvalue_min_kept": float(values.abs().min()),
            "negative_eigenvalues": int((values < -1e-10 * values.abs().max()).sum()),  # beyond rounding
            "ritz_residual": residual,
        }

    def fit(self, curvature: Curvature | None, damping: float | None, train_features: TrainFeatures) -> None:
        super().fit(curvature, damping, train_features)
        self.handle_indefinite(float(self.eigenvalues.min()), float(self.eigenvalues.max()))
        self.load_state_dict(self.state_dict())  # the inverse eigenvalues with this λ
        self.diagnostics["negative_curvature"] = bool((1.0 / self.inverse_eigenvalues <= 0).any())

    # ------------------------------------------------------------------ features and solve
    def feature_dim(self, fm: FunctionalModel) -> int:
        return min(self.config["rank"], fm.p)

    def features(self, fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                 targets: Tensor) -> Tensor:
        U = self.eigenvectors
        return per_example_grads(fm, fn, inputs, targets).to(U.dtype) @ U.T

    def precondition(self, G: Tensor) -> Tensor:
        return G.to(self.inverse_eigenvalues.dtype) * self.inverse_eigenvalues

    def state_dict(self) -> dict[str, Tensor]:
        return {"eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors,
                "damping": torch.tensor(float(self.damping), dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.eigenvalues, self.eigenvectors = state["eigenvalues"], state["eigenvectors"]
        self.damping = float(state["damping"])
        spectrum = self.eigenvalues.abs() if self.config["indefinite"] == "abs" else self.eigenvalues
        self.inverse_eigenvalues = 1.0 / (spectrum + self.damping)


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"`{name}` must be a positive integer, got {value!r}")
