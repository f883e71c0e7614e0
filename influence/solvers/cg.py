"""(Preconditioned) conjugate gradient on a block of right-hand sides, each row with its own
step sizes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from influence.solvers.base import SolveInfo, relative_residual

DIVERGED_RESIDUAL = 1e3


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], B: Tensor, damping: float, tol: float = 1e-6,
                       max_iter: int = 1000,
                       preconditioner: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, SolveInfo]:
    """Solve `(A + λI) X = B` row-wise by (preconditioned) conjugate gradient.

    Args:
        matvec: V: Tensor[k, p] -> A V: Tensor[k, p], A symmetric.
        B: right-hand sides, Tensor[k, p] (one per row).
        damping: λ ≥ 0.
        tol: stop a row when its relative residual ‖r‖/‖b‖ ≤ tol (the true residual, with
            or without a preconditioner).
        max_iter: iteration cap.
        preconditioner: R: Tensor[k, p] -> M⁻¹ R, M symmetric positive definite and close to
            A + λI (convergence then depends on the condition number of M⁻¹(A + λI)); None
            for plain CG.
    Returns:
        X: Tensor[k, p], and the `SolveInfo`. A row that meets negative curvature
        (pᵀ(A + λI)p ≤ 0) is frozen at its last iterate and flagged.
    """
    precondition = preconditioner or (lambda V: V)
    X = torch.zeros_like(B)
    R = B.clone()
    Z = precondition(R)
    P = Z.clone()
    rz = (R * Z).sum(dim=1)
    bnorm2 = (B * B).sum(dim=1)
    active = (R * R).sum(dim=1) > (tol**2) * bnorm2
    negative = torch.zeros_like(active)
    iterations = 0
    while bool(active.any()) and iterations < max_iter:
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
    residual = relative_residual(matvec, X, B, damping)
    finite = bool(torch.isfinite(X).all()) and residual == residual
    # diverged: the iterates overflowed, or the residual grew a thousandfold past ‖b‖ (x = 0
    # has relative residual 1): the operator is not symmetric positive definite
    diverged = not finite or residual > DIVERGED_RESIDUAL
    info = SolveInfo("cg", iterations, residual, converged=not diverged and residual <= max(tol, 1e-12) * 10,
                     negative_curvature=bool(negative.any()), diverged=diverged)
    return X, info
