"""`method="cg"`: conjugate gradient on curvature-vector products (any model size)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from influence.curvature import Curvature
from influence.damping import Damping, check_indefinite_option, iterative_damping
from influence.errors import InfluenceWarning
from influence.methods.base import Method, TrainFeatures, register
from influence.model import FunctionalModel
from influence.options import check_int, check_number
from influence.solvers import SolveInfo, conjugate_gradient, top_eigenpairs

# A preconditioner whose Ritz residual ‖A u − e u‖ / max|e| is above this did not find the
# top of the spectrum (Krylov space too small): it is recomputed once with a larger space,
# then dropped with a warning.
RITZ_RESIDUAL_LIMIT = 0.1


@dataclass(frozen=True)
class CGOptions:
    """Options of `method="cg"`.

    Attributes:
        tol: relative residual at which a solve stops (raised to what the model's dtype can
            attain: 1.2e-5 in float32).
        max_iter: iteration cap per solve.
        indefinite: "raise_damping" (default) or "warn", when H + λI is not positive definite.
        preconditioner_rank: top curvature eigenpairs in the preconditioner (0: plain CG).
    """

    tol: float = 1e-6
    max_iter: int = 1000
    indefinite: str = "raise_damping"
    preconditioner_rank: int = 100

    def __post_init__(self):
        check_number(self.tol, "tol", positive=True)
        check_int(self.max_iter, "max_iter")
        check_indefinite_option(self.indefinite, "cg", ("raise_damping", "warn"))
        check_int(self.preconditioner_rank, "preconditioner_rank", minimum=0)


@register
class ConjugateGradient(Method):
    """Solves `(H + λI) x = g` per gradient with block CG, preconditioned by the top of the
    curvature's spectrum; the solution is the same as unpreconditioned CG's (same `tol`).

    Each iteration costs one curvature product per right-hand side (a pass over the
    curvature data): accurate for any model, but every query and every self-influence
    value is a solve — use it for a few high-precision queries. Plain CG needs O(√κ)
    iterations with κ = (e_max + λ)/(e_min + λ); `fit` finds the top `preconditioner_rank`
    eigenpairs (U: Tensor[r, p], e) by block Lanczos (2r products, once) and CG runs with
    the spectral-deflation preconditioner

        M⁻¹ = Uᵀ diag(1/(e + λ)) U + (I − UᵀU) / (e_r + λ),

    which maps the top-r eigenvalues of H + λI to 1 (Frangella et al. 2023). On the
    MNIST-5k MLP (p = 25,450) rank 100 cuts the iterations from 109 to 33.

    When the curvature can be indefinite (curvature="hessian" on a network, or a task whose
    loss is not convex), `fit` estimates its smallest eigenvalue by Lanczos and, with
    `indefinite="raise_damping"`, raises λ until `H + λI` is positive definite. A direction
    of negative curvature met during a solve is flagged in the `SolveInfo`.
    """

    name = "cg"
    Options = CGOptions
    queries_use_curvature = True

    def fit(self, fm: FunctionalModel, curvature: Curvature | None, damping: Damping,
            train_features: TrainFeatures) -> dict[str, Any]:
        lam, info = iterative_damping(self.name, self.options.indefinite, curvature, damping)
        state = {"damping": torch.tensor(lam, dtype=torch.float64)}
        rank = min(self.options.preconditioner_rank, curvature.p)
        if rank > 0:
            pairs, info["preconditioner"] = _preconditioner_pairs(curvature, rank)
            state.update(pairs)
        self.restore(state, curvature)
        return info

    def state_dict(self) -> dict[str, Tensor]:
        state = {"damping": torch.tensor(self.damping, dtype=torch.float64)}
        if self.eigenvectors is not None:
            state.update(eigenvalues=self.eigenvalues, eigenvectors=self.eigenvectors)
        return state

    def restore(self, state: dict[str, Tensor], curvature: Curvature | None) -> None:
        self.curvature, self.damping = curvature, float(state["damping"])
        self.eigenvalues, self.eigenvectors = state.get("eigenvalues"), state.get("eigenvectors")

    def preconditioner(self):
        """R: Tensor[k, p] -> M⁻¹ R (see the class docstring), or None for plain CG."""
        if self.eigenvectors is None:
            return None
        U, e = self.eigenvectors, self.eigenvalues.abs()
        floor = float(e.min()) + self.damping
        if floor <= 0:  # a zero curvature and λ = 0: nothing to precondition with
            return None
        shrink = 1.0 / (e + self.damping) - 1.0 / floor  # [r]
        return lambda R: ((R @ U.T) * shrink) @ U + R / floor

    def precondition(self, G: Tensor) -> tuple[Tensor, SolveInfo]:
        B = G.to(self.curvature.fm.dtype)
        preconditioner = self.preconditioner()
        X, info = self._solve(B, preconditioner)
        if preconditioner is not None and info.diverged:
            # in low precision a nearly singular curvature can make M⁻¹ useless: plain CG instead
            X, info = self._solve(B, None)
            info = replace(info, note="the preconditioned solve diverged; solved without the preconditioner")
        return X, info

    def _solve(self, B: Tensor, preconditioner) -> tuple[Tensor, SolveInfo]:
        return conjugate_gradient(self.curvature.matvec, B, self.damping, tol=self.options.tol,
                                  max_iter=self.options.max_iter, preconditioner=preconditioner)


def _preconditioner_pairs(curvature: Curvature, rank: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Top-`rank` eigenpairs by block Lanczos with a Krylov space of 2·rank, retried once with
    4·rank when their Ritz residual says the space was too small; dropped (plain CG) with a
    warning when it is still poor."""
    for krylov in (2 * rank, 4 * rank):
        krylov = min(krylov, curvature.p)
        values, vectors, residual = top_eigenpairs(curvature.matvec, curvature.p, rank, krylov, block_size=16,
                                                   seed=0, dtype=curvature.fm.dtype, device=curvature.fm.device,
                                                   progress=curvature.progress)
        info = {"rank": rank, "krylov_dim": krylov, "ritz_residual": residual,
                "eigenvalue_max": float(values.abs().max()), "eigenvalue_min_kept": float(values.abs().min())}
        if residual <= RITZ_RESIDUAL_LIMIT or krylov == curvature.p:
            return {"eigenvalues": values, "eigenvectors": vectors}, info
    warnings.warn(f"cg: the preconditioner's eigenpairs are inaccurate (Ritz residual {residual:.3g} with a "
                  f"{krylov}-dimensional Krylov space); solving without it (slower). Pass preconditioner_rank=0 "
                  "to skip this set-up.", InfluenceWarning, stacklevel=4)
    return {}, {**info, "dropped": "Ritz residual above " + f"{RITZ_RESIDUAL_LIMIT:g}"}
