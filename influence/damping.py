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
DEFAULT_RATIOS = (DAMPING_RATIO_CONVEX, DAMPING_RATIO_NONCONVEX)


def outputs_are_affine(fm: FunctionalModel, train: ExampleData) -> bool:
    """Whether the outputs are affine in the attributed parameters (a convex objective),
    checked on the first 8 training examples (one suffices almost surely for a random direction)."""
    inputs, _ = train.batch(range(min(len(train), 8)))
    try:
        return is_affine_in_parameters(fm, to_model(inputs, fm.device, fm.dtype))
    except NotImplementedError as error:  # an op without a forward-mode derivative
        raise InfluenceError(
            f"the model uses an op without a forward-mode derivative ({' '.join(str(error).split())[:200]}), "
            "which the curvature methods need (Gauss-Newton products and this convexity check use jvp): "
            "pass method='identity' or method='tracin' (gradient similarity, no curvature), or replace the "
            "op by one with a forward derivative") from None


def requested_damping(value: float | None, ratio: float | None, uses_curvature: bool, fm: FunctionalModel,
                      train: ExampleData) -> Damping:
    """The `Damping` a user's `damping` / `damping_ratio` ask for; the model's convexity is
    checked only when a curvature method will need its default ratio."""
    convex = uses_curvature and value is None and ratio is None and outputs_are_affine(fm, train)
    return Damping(value, ratio, convex)


@dataclass(frozen=True)
class Damping:
    """What the user asked for: `value` (λ itself), else `ratio` × mean eigenvalue, else a
    method's default ratio for a convex (`convex`, checked by the attributor) or a
    non-convex model."""

    value: float | None = None
    ratio: float | None = None
    convex: bool = False

    def effective_ratio(self, defaults: tuple[float, float] = DEFAULT_RATIOS) -> float:
        """The ratio in use when λ is not given: the user's, else `defaults[0]` for a convex
        model and `defaults[1]` otherwise."""
        if self.ratio is not None:
            return self.ratio
        return defaults[0] if self.convex else defaults[1]

    def resolve(self, mean_eigenvalue: Callable[[], float], what: str = "mean eigenvalue",
                defaults: tuple[float, float] = DEFAULT_RATIOS) -> tuple[float, str]:
        """(λ, how it was chosen). `mean_eigenvalue` is called only when λ is not given.

        Raises `InfluenceError` when the mean eigenvalue is not a positive finite number.
        """
        if self.value is not None:
            return float(self.value), "given"
        ratio = self.effective_ratio(defaults)
        mean = float(mean_eigenvalue())
        if not math.isfinite(mean) or mean <= 0:
            raise InfluenceError(f"the curvature's {what} is {mean}; pass an explicit `damping` "
                                 "(is the model output independent of the attributed parameters?)")
        return ratio * mean, f"auto: {ratio:g} × {what} {mean:.4g}"
