"""Diagnostics shared by the solvers."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass
class SolveInfo:
    """What happened in one solve of `(A + λI) X = B` for a block of right-hand sides.

    Attributes:
        solver: "cg" or "lissa".
        iterations: iterations run (products with A per right-hand side).
        residual: max over right-hand sides of ‖(A + λI)x − b‖ / ‖b‖, recomputed at the end.
        converged: residual ≤ tol for every right-hand side.
        tol: the tolerance the solve aimed for (raised to what the dtype can attain).
        max_iter_reached: the iteration cap stopped it (more iterations would help);
            otherwise an unconverged solve stagnated (precision or conditioning).
        restarts: CG restarts from the true residual (it drifts in low precision).
        note: what else the caller should know (e.g. a preconditioner that was dropped).
        negative_curvature: a direction with xᵀ(A + λI)x ≤ 0 was met (CG) — A + λI is not
            positive definite, so the "solution" is not a minimiser.
        diverged: the iterates grew without bound or overflowed (LiSSA scale too small; CG on
            an operator that is not symmetric positive definite). `residual` is then the one
            of the last finite iterate (LiSSA) or of the final one (CG, possibly inf).
    """

    solver: str
    iterations: int
    residual: float
    converged: bool
    tol: float = 0.0
    max_iter_reached: bool = False
    negative_curvature: bool = False
    diverged: bool = False
    restarts: int = 0
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def attainable_residual(dtype: torch.dtype) -> float:
    """The smallest relative residual worth asking for in `dtype`: 100 × machine epsilon
    (1.2e-5 in float32, 2.2e-14 in float64). Products with the curvature are summed over
    many examples and round at this level, so a tighter tolerance cannot be met."""
    return 100 * torch.finfo(dtype).eps


def relative_residual(matvec, X: Tensor, B: Tensor, damping: float) -> float:
    """max_j ‖(A + λI) x_j − b_j‖ / ‖b_j‖ over the rows of X and B (zero rows count as 0)."""
    R = B - (matvec(X) + damping * X)
    bnorm = B.norm(dim=1)
    ratio = R.norm(dim=1) / bnorm.clamp_min(1e-300)
    ratio[bnorm == 0] = R.norm(dim=1)[bnorm == 0]
    return float(ratio.max()) if ratio.numel() else 0.0
