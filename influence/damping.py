"""The damping λ of `(H + λI)⁻¹`: given, or a multiple of the curvature's mean eigenvalue.

A ratio carries across models and loss scales where an absolute λ does not. The defaults:
models whose outputs are affine in the attributed parameters have a convex objective, and
influence is then accurate with a touch of damping; non-convex models need much more
(measured on MLPs: benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from influence.batching import to_model
from influence.data import ExampleData
from influence.errors import InfluenceError
from influence.model import FunctionalModel, is_affine_in_parameters

DAMPING_RATIO_CONVEX = 1e-3
DAMPING_RATIO_NONCONVEX = 0.3


def default_ratio(fm: FunctionalModel, train: ExampleData) -> float:
    """`DAMPING_RATIO_CONVEX` when the outputs are affine in the attributed parameters (checked
    on the first 64 training examples), else `DAMPING_RATIO_NONCONVEX`."""
    inputs, _ = train.batch(range(min(len(train), 64)))
    convex = is_affine_in_parameters(fm, to_model(inputs, fm.device, fm.dtype))
    return DAMPING_RATIO_CONVEX if convex else DAMPING_RATIO_NONCONVEX


@dataclass(frozen=True)
class Damping:
    """What the user asked for: `value` (λ itself), else `ratio` × mean eigenvalue, else the
    method's default ratio (`default_ratio`, chosen by the attributor from the model)."""

    value: float | None = None
    ratio: float | None = None
    default_ratio: float | None = None

    def effective_ratio(self, fallback: float | None = None) -> float:
        """The ratio in use when λ is not given: the user's, else the default, else `fallback`."""
        return next(r for r in (self.ratio, self.default_ratio, fallback, DAMPING_RATIO_NONCONVEX) if r is not None)

    def resolve(self, mean_eigenvalue: Callable[[], float], what: str = "mean eigenvalue",
                fallback_ratio: float | None = None) -> tuple[float, str]:
        """(λ, how it was chosen). `mean_eigenvalue` is called only when λ is not given.

        Raises `InfluenceError` when the mean eigenvalue is not a positive finite number.
        """
        if self.value is not None:
            return float(self.value), "given"
        ratio = self.effective_ratio(fallback_ratio)
        mean = float(mean_eigenvalue())
        if not math.isfinite(mean) or mean <= 0:
            raise InfluenceError(f"the curvature's {what} is {mean}; pass an explicit `damping` "
                                 "(is the model output independent of the attributed parameters?)")
        return ratio * mean, f"auto: {ratio:g} × {what} {mean:.4g}"
