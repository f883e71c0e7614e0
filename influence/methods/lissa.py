"""`method="lissa"`: the stochastic Neumann-series solver of Koh & Liang (2017)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from influence.curvature import Curvature
from influence.damping import Damping, check_indefinite_option, iterative_damping
from influence.errors import InfluenceError
from influence.methods.base import Method, TrainFeatures, register
from influence.model import FunctionalModel
from influence.options import check_int, check_number
from influence.solvers import SolveInfo, lissa


@dataclass(frozen=True)
class LiSSAOptions:
    """Options of `method="lissa"`.

    Attributes:
        tol: relative residual at which a full-batch series stops.
        max_iter: recursion depth cap.
        scale: s, above the largest eigenvalue of H + λI; None picks 1.1 × (power-iteration
            estimate + λ). A hand-set scale below it diverges (detected and reported).
        hvp_batch_size: None for full-batch products (deterministic, stops at `tol`); an
            integer for minibatch products (classic stochastic LiSSA, `max_iter` steps).
        repeats: stochastic runs averaged.
        sample_seed: seed of the minibatches and the power iteration.
        indefinite: "raise_damping" (default) or "warn", as for cg.
    """

    tol: float = 1e-5
    max_iter: int = 20_000
    scale: float | None = None
    hvp_batch_size: int | None = None
    repeats: int = 1
    sample_seed: int = 0
    indefinite: str = "raise_damping"

    def __post_init__(self):
        check_number(self.tol, "tol", positive=True)
        check_int(self.max_iter, "max_iter")
        check_int(self.repeats, "repeats")
        check_int(self.sample_seed, "sample_seed", minimum=0)
        if self.hvp_batch_size is not None:
            check_int(self.hvp_batch_size, "hvp_batch_size")
        check_indefinite_option(self.indefinite, "lissa", ("raise_damping", "warn"))


@register
class LiSSA(Method):
    """Neumann series `(1/s) Σ (I − (H + λI)/s)^t g`: O(κ) iterations, against O(√κ) for
    CG. A diverging series is detected and raised as an `InfluenceError` with its residual."""

    name = "lissa"
    Options = LiSSAOptions
    queries_use_curvature = True

    def fit(self, fm: FunctionalModel, curvature: Curvature | None, damping: Damping,
            train_features: TrainFeatures) -> dict[str, Any]:
        lam, info = iterative_damping(self.name, self.options.indefinite, curvature, damping)
        scale = self.options.scale
        if scale is None:
            scale = 1.1 * (curvature.largest_eigenvalue(seed=self.options.sample_seed) + lam)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise InfluenceError(f"lissa: the scale s must be a finite number > 0 (above the largest eigenvalue of "
                                 f"H + λI), got {scale!r}; with a zero curvature pass damping > 0")
        self.restore({"damping": torch.tensor(lam, dtype=torch.float64),
                      "scale": torch.tensor(float(scale), dtype=torch.float64)}, curvature)
        return {**info, "scale": self.scale}

    def state_dict(self) -> dict[str, Tensor]:
        return {"damping": torch.tensor(self.damping, dtype=torch.float64),
                "scale": torch.tensor(self.scale, dtype=torch.float64)}

    def restore(self, state: dict[str, Tensor], curvature: Curvature | None) -> None:
        self.curvature, self.damping, self.scale = curvature, float(state["damping"]), float(state["scale"])

    def precondition(self, G: Tensor) -> tuple[Tensor, SolveInfo]:
        c, o = self.curvature, self.options
        sample = None
        if o.hvp_batch_size is not None:
            sample = lambda V, step: c.minibatch_matvec(V, o.hvp_batch_size, o.sample_seed + step)
        return lissa(c.matvec, G.to(c.fm.dtype), self.damping, self.scale, tol=o.tol, max_iter=o.max_iter,
                     sample_matvec=sample, repeats=o.repeats)
