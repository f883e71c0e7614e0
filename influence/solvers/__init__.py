"""Iterative solvers for `(A + λI) X = B` with A given only as a matrix-vector product, and
the block-Lanczos eigensolver (`top_eigenpairs`) used by arnoldi and cg's preconditioner.

Each solver returns the solution and a `SolveInfo` with its diagnostics; none of them
silently returns garbage: non-convergence, divergence and negative curvature are recorded
there (and the caller warns).
"""

from influence.solvers.base import SolveInfo
from influence.solvers.cg import conjugate_gradient
from influence.solvers.lanczos import top_eigenpairs
from influence.solvers.lissa import lissa

__all__ = ["SolveInfo", "conjugate_gradient", "lissa", "top_eigenpairs"]
