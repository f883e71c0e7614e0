"""`method="cg"`: conjugate gradient on curvature-vector products (any model size)."""

from __future__ import annotations

from torch import Tensor

from influence.curvature import Curvature
from influence.methods.base import Method, TrainFeatures, register
from influence.solvers import conjugate_gradient


@register
class ConjugateGradient(Method):
    """Solves `(H + λI) x = g` per gradient with block CG; nothing is factorised.

    Each iteration costs one curvature product per right-hand side (a pass over the
    curvature data). Converges in at most p iterations in exact arithmetic, typically in
    O(√κ) with κ the condition number, so damping also buys speed.

    When the curvature can be indefinite (curvature="hessian" on a network, or a task whose
    loss is not convex), `fit` estimates its smallest eigenvalue by Lanczos (30 products) and,
    with `indefinite="raise_damping"` (default), raises λ until `H + λI` is positive definite
    (`diagnostics["damping_raised"]`); `indefinite="warn"` keeps λ. A direction of negative
    curvature met during a solve is always flagged (`negative_curvature`) and warned about.
    """

    name = "cg"
    queries_use_curvature = True
    options = {"tol": 1e-6, "max_iter": 1000, "indefinite": "raise_damping"}

    def __init__(self, **options):
        super().__init__(**options)
        self._check_indefinite_option(("raise_damping", "warn"))

    def fit(self, curvature: Curvature | None, damping: float | None, train_features: TrainFeatures) -> None:
        super().fit(curvature, damping, train_features)
        if not curvature.positive_semidefinite:
            self.handle_indefinite(*curvature.extreme_eigenvalues(), estimated=True)

    def precondition(self, G: Tensor) -> Tensor:
        X, info = conjugate_gradient(self.curvature.matvec, G.to(self.curvature.fm.dtype), self.damping,
                                     tol=self.config["tol"], max_iter=self.config["max_iter"])
        self.diagnostics = info.as_dict()
        return X
