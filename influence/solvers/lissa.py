"""LiSSA: the Neumann series `(A + λI)⁻¹ = (1/s) Σ_t (I − (A + λI)/s)^t`.

Agarwal et al. (2017), as used for influence by Koh & Liang (2017). With full-batch
products it is Richardson iteration; with `sample_matvec` it uses a fresh minibatch
estimate of A at every step (classic stochastic LiSSA) and averages `repeats` runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from influence.solvers.base import SolveInfo, attainable_residual, relative_residual


def lissa(matvec: Callable[[Tensor], Tensor], B: Tensor, damping: float, scale: float, tol: float = 1e-5,
          max_iter: int = 10000, sample_matvec: Callable[[Tensor, int], Tensor] | None = None,
          repeats: int = 1) -> tuple[Tensor, SolveInfo]:
    """Solve `(A + λI) X = B` row-wise with the LiSSA recursion.

    Args:
        matvec: V: Tensor[k, p] -> A V (full data); used for the stopping test and the
            final residual.
        B: right-hand sides, Tensor[k, p].
        damping: λ ≥ 0.
        scale: s, must exceed the largest eigenvalue of A + λI or the series diverges.
        tol: stop when the relative residual ‖b − (A + λI)x‖/‖b‖ ≤ tol (full batch only;
            stochastic runs go `max_iter` steps, the classic "depth").
        max_iter: recursion depth cap.
        sample_matvec: optional `(V, step) -> minibatch estimate of A V` for stochastic LiSSA.
        repeats: independent stochastic runs to average (ignored for full batch).
    Returns:
        X: Tensor[k, p] and the `SolveInfo`.
    """
    tol = max(tol, attainable_residual(B.dtype))
    product = matvec if sample_matvec is None else None
    runs = 1 if sample_matvec is None else repeats
    bnorm = B.norm(dim=1).clamp_min(1e-300)
    total = torch.zeros_like(B)
    iterations, diverged, last_finite = 0, False, float("inf")
    for run in range(runs):
        S = B.clone()  # S_t = Σ_{τ≤t} (I − (A + λI)/s)^τ b, so x_t = S_t / s
        for step in range(max_iter):
            AS = matvec(S) if product is not None else sample_matvec(S, run * max_iter + step)
            update = B - (AS + damping * S) / scale  # = b − (A + λI) x_t, the residual
            S = S + update
            iterations = max(iterations, step + 1)
            ratio = float((update.norm(dim=1) / bnorm).max())
            if ratio == ratio and ratio != float("inf"):
                last_finite = ratio  # the relative residual of the last finite iterate
            if not torch.isfinite(S).all() or ratio > 1e8:
                diverged = True
                break
            if product is not None and ratio <= tol:
                break
        total += S
        if diverged:
            break
    X = total / (runs * scale)
    # a diverged run reports the residual of its last finite iterate (it grew past 1e8 or overflowed)
    residual = relative_residual(matvec, X, B, damping) if not diverged else last_finite
    converged = not diverged and residual <= tol * (1 if sample_matvec is None else 10)
    return X, SolveInfo("lissa", iterations, residual, converged=converged, tol=tol,
                        max_iter_reached=iterations >= max_iter, diverged=diverged)
