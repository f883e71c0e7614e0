"""`method="lissa"`: the stochastic Neumann-series solver of Koh & Liang (2017)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from influence.curvature import Curvature
from influence.errors import InfluenceError
from influence.methods.base import Method, TrainFeatures, register
from influence.solvers import lissa


@register
class LiSSA(Method):
    """Neumann series `(1/s) Σ (I − (H + λI)/s)^t g`.

    `scale=None` picks s = 1.1 × (largest eigenvalue of H, by power iteration, + λ) so the
    series converges; a hand-set scale below that diverges (detected and reported).
    `hvp_batch_size=None` uses full-batch products (deterministic, stops at `tol`);
    an integer uses minibatch products (classic stochastic LiSSA) for `max_iter` steps,
    averaged over `repeats` runs. Needs O(κ) iterations, against O(√κ) for CG. A diverging
    series is detected and raised as an `InfluenceError` with its residual. An indefinite
    curvature is handled as by `cg` (option `indefinite`).
    """

    name = "lissa"
    queries_use_curvature = True
    options = {"tol": 1e-5, "max_iter": 20_000, "scale": None, "hvp_batch_size": None, "repeats": 1, "sample_seed": 0,
               "indefinite": "raise_damping"}

    def __init__(self, **options):
        super().__init__(**options)
        self._check_indefinite_option(("raise_damping", "warn"))

    def fit(self, curvature: Curvature | None, damping: float | None, train_features: TrainFeatures) -> None:
        super().fit(curvature, damping, train_features)
        if not curvature.positive_semidefinite:
            self.handle_indefinite(*curvature.extreme_eigenvalues(), estimated=True)
        scale = self.config["scale"]
        if scale is None:
            scale = 1.1 * (curvature.largest_eigenvalue(seed=self.config["sample_seed"]) + self.damping)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise InfluenceError(f"lissa: the scale s must be a finite number > 0 (above the largest eigenvalue of "
                                 f"H + λI), got {scale!r}; with a zero curvature pass damping > 0")
        self.scale = float(scale)

    def state_dict(self) -> dict[str, Tensor]:
        return {"scale": torch.tensor(self.scale, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.scale = float(state["scale"])

    def precondition(self, G: Tensor) -> Tensor:
        c = self.curvature
        sample = None
        if self.config["hvp_batch_size"] is not None:
            sample = lambda V, step: c.minibatch_matvec(V, self.config["hvp_batch_size"], self.config["sample_seed"] + step)
        X, info = lissa(c.matvec, G.to(c.fm.dtype), self.damping, self.scale, tol=self.config["tol"],
                        max_iter=self.config["max_iter"], sample_matvec=sample, repeats=self.config["repeats"])
        self.diagnostics = {**info.as_dict(), "scale": self.scale}
        return X
