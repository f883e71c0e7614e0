"""`method="cg"`: conjugate gradient on curvature-vector products (any model size)."""

from __future__ import annotations

from torch import Tensor

from influence.curvature import Curvature
from influence.errors import InvalidArgumentError
from influence.methods.base import Method, TrainFeatures, register
from influence.solvers import conjugate_gradient, top_eigenpairs


@register
class ConjugateGradient(Method):
    """Solves `(H + λI) x = g` per gradient with block CG, preconditioned by the top of the
    curvature's spectrum; the solution is the same as unpreconditioned CG's (same `tol`).

    Each iteration costs one curvature product per right-hand side (a pass over the
    curvature data). Plain CG needs O(√κ) iterations with κ = (e_max + λ)/(e_min + λ); the
    curvature of a trained network has a few large eigenvalues and many small ones, so `fit`
    finds the top `preconditioner_rank` eigenpairs (U: Tensor[r, p], e) by block Lanczos
    (2r products, once) and CG runs with the spectral-deflation preconditioner

        M⁻¹ = Uᵀ diag(1/(e + λ)) U + (I − UᵀU) / (e_r + λ),

    which maps the top-r eigenvalues of H + λI to 1 and leaves κ ≈ (e_r + λ)/(e_min + λ)
    (Frangella et al. 2023, "Randomized Nyström preconditioning"). On the MNIST-5k MLP
    (p = 25,450) rank 100 cuts the iterations from 109 to 33. `preconditioner_rank=0` runs
    plain CG.

    When the curvature can be indefinite (curvature="hessian" on a network, or a task whose
    loss is not convex), `fit` estimates its smallest eigenvalue by Lanczos (30 products) and,
    with `indefinite="raise_damping"` (default), raises λ until `H + λI` is positive definite
    (`diagnostics["damping_raised"]`); `indefinite="warn"` keeps λ. A direction of negative
    curvature met during a solve is always flagged (`negative_curvature`) and warned about.
    The preconditioner uses |e|, so it stays positive definite.
    """

    name = "cg"
    queries_use_curvature = True
    options = {"tol": 1e-6, "max_iter": 1000, "indefinite": "raise_damping", "preconditioner_rank": 100}

    def __init__(self, **options):
        super().__init__(**options)
        self._check_indefinite_option(("raise_damping", "warn"))
        rank = self.config["preconditioner_rank"]
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise InvalidArgumentError(f"`preconditioner_rank` must be an integer >= 0, got {rank!r}")
        self.eigenvalues: Tensor | None = None
        self.eigenvectors: Tensor | None = None

    def fit(self, curvature: Curvature | None, damping: float | None, train_features: TrainFeatures) -> None:
        super().fit(curvature, damping, train_features)
        if not curvature.positive_semidefinite:
            self.handle_indefinite(*curvature.extreme_eigenvalues(), estimated=True)
        rank = min(self.config["preconditioner_rank"], curvature.p)
        if rank > 0:
            self.eigenvalues, self.eigenvectors, residual = top_eigenpairs(
                curvature.matvec, curvature.p, rank, min(2 * rank, curvature.p), block_size=16, seed=0,
                dtype=curvature.fm.dtype, device=curvature.fm.device)
            self.diagnostics["preconditioner"] = {"rank": rank, "eigenvalue_max": float(self.eigenvalues.abs().max()),
                                                  "eigenvalue_min_kept": float(self.eigenvalues.abs().min()),
                                                  "ritz_residual": residual}

    def _preconditioner(self):
        """R: Tensor[k, p] -> M⁻¹ R (see the class docstring), or None for plain CG."""
        if self.eigenvectors is None:
            return None
        U, e = self.eigenvectors, self.eigenvalues.abs()
        floor = float(e.min()) + self.damping
        if floor <= 0:  # a zero curvature and λ = 0: nothing to precondition with
            return None
        shrink = 1.0 / (e + self.damping) - 1.0 / floor  # [r]

        def apply(R: Tensor) -> Tensor:
            return ((R @ U.T) * shrink) @ U + R / floor
        return apply

    def precondition(self, G: Tensor) -> Tensor:
        B = G.to(self.curvature.fm.dtype)
        preconditioner = self._preconditioner()
        X, info = self._solve(B, preconditioner)
        if preconditioner is not None and info.diverged:
            # in low precision a nearly singular curvature can make M⁻¹ useless: plain CG instead
            X, info = self._solve(B, None)
            self.diagnostics["preconditioner_dropped"] = "the preconditioned solve diverged"
        self.diagnostics = {**self.diagnostics, **info.as_dict()}
        return X

    def _solve(self, B: Tensor, preconditioner):
        return conjugate_gradient(self.curvature.matvec, B, self.damping, tol=self.config["tol"],
                                  max_iter=self.config["max_iter"], preconditioner=preconditioner)

    def state_dict(self) -> dict[str, Tensor]:
        if self.eigenvectors is None:
            return {}
        return {"eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.eigenvalues, self.eigenvectors = state.get("eigenvalues"), state.get("eigenvectors")
