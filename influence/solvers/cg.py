"""(Preconditioned) conjugate gradient on a block of right-hand sides, each row with its own
step sizes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from influence.solvers.base import SolveInfo, attainable_residual, relative_residual

DIVERGED_RESIDUAL = 1e3
MAX_RESTARTS = 5


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], B: Tensor, damping: float, tol: float = 1e-6,
                       max_iter: int = 1000,
                       preconditioner: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, SolveInfo]:
    """Solve `(A + λI) X = B` row-wise by (preconditioned) conjugate gradient.

    Args:
        matvec: V: Tensor[k, p] -> A V: Tensor[k, p], A symmetric.
        B: right-hand sides, Tensor[k, p] (one per row).
        damping: λ ≥ 0.
        tol: stop a row when its true relative residual ‖b − (A + λI)x‖/‖b‖ ≤ tol. The
            recursively updated residual drifts from the true one in low precision, so
            when it reaches `tol` the true residual is recomputed and CG restarts from the
            current iterate if needed (at most `MAX_RESTARTS` times). A tolerance below what
            the dtype can attain (`attainable_residual`) is raised to it.
        max_iter: cap on the iterations (products with A per right-hand side), restarts included.
        preconditioner: R: Tensor[k, p] -> M⁻¹ R, M symmetric positive definite and close to
            A + λI; None for plain CG.
    Returns:
        X: Tensor[k, p], and the `SolveInfo`. A row that meets negative curvature
        (pᵀ(A + λI)p ≤ 0) is frozen at its last iterate and flagged.
    """
    tol = max(tol, attainable_residual(B.dtype))
    X = torch.zeros_like(B)
    negative = torch.zeros(B.shape[0], dtype=torch.bool, device=B.device)
    iterations = restarts = 0
    while True:
        R = B - (matvec(X) + damping * X) if iterations else B.clone()
        done, used, bad = _cg_pass(matvec, B, X, R, damping, tol, max_iter - iterations, preconditioner)
        iterations += used
        negative |= bad
        residual = relative_residual(matvec, X, B, damping)
        if residual <= tol or not done or iterations >= max_iter or restarts >= MAX_RESTARTS \
                or not torch.isfinite(X).all():
            break
        restarts += 1
    finite = bool(torch.isfinite(X).all()) and residual == residual
    # diverged: the iterates overflowed, or the residual grew a thousandfold past ‖b‖ (x = 0
    # has relative residual 1): the operator is not symmetric positive definite
    diverged = not finite or residual > DIVERGED_RESIDUAL
    return X, SolveInfo("cg", iterations, residual, converged=not diverged and residual <= tol, tol=tol,
                        max_iter_reached=iterations >= max_iter, negative_curvature=bool(negative.any()),
                        diverged=diverged, restarts=restarts)


def _cg_pass(matvec, B: Tensor, X: Tensor, R: Tensor, damping: float, tol: float, budget: int,
             preconditioner) -> tuple[bool, int, Tensor]:
    """CG from iterate X (updated in place) with residual R until every row's recursive
    residual is ≤ tol·‖b‖ or `budget` iterations; returns (stopped on tol, iterations, rows
    that met negative curvature)."""
    precondition = preconditioner or (lambda V: V)
    Z = precondition(R)
    P = Z.clone()
    rz = (R * Z).sum(dim=1)
    bnorm2 = (B * B).sum(dim=1)
    active = (R * R).sum(dim=1) > (tol**2) * bnorm2
    negative = torch.zeros_like(active)
    iterations = 0
    while bool(active.any()) and iterations < budget:
        iterations += 1
        AP = matvec(P) + damping * P
        pAp = (P * AP).sum(dim=1)
        bad = active & (pAp <= 0)
        negative |= bad
        active &= ~bad
        alpha = torch.where(active, rz / torch.where(active, pAp, torch.ones_like(pAp)), torch.zeros_like(rz))
        X += alpha[:, None] * P
        R -= alpha[:, None] * AP
        Z = precondition(R)
        rz_new = (R * Z).sum(dim=1)
        beta = torch.where(active, rz_new / torch.where(active, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        P = Z + beta[:, None] * P
        rz = torch.where(active, rz_new, rz)
        active &= (R * R).sum(dim=1) > (tol**2) * bnorm2
    return not bool(active.any()), iterations, negative
