"""`method="cg"`: conjugate gradient on curvature-vector products (any model size)."""

from __future__ import annotations

from torch import Tensor

from influence.methods.base import Method, register
from influence.solvers import conjugate_gradient


@register
class ConjugateGradient(Method):
    """Solves `(H + λI) x = g` per gradient with block CG; nothing is factorised.

    Each iteration costs one curvature product per right-hand side (a pass over the
    curvature data). Converges in at most p iterations in exact arithmetic, typically in
    O(√κ) with κ the condition number, so damping also buys speed.
    """

    name = "cg"
    queries_use_curvature = True
    options = {"tol": 1e-6, "max_iter": 1000}

    def precondition(self, G: Tensor) -> Tensor:
        X, info = conjugate_gradient(self.curvature.matvec, G.to(self.curvature.fm.dtype), self.damping,
                                     tol=self.config["tol"], max_iter=self.config["max_iter"])
        self.diagnostics = info.as_dict()
        return X
