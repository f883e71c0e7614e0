"""The damping λ of `(H + λI)⁻¹`: given, or a multiple of the curvature's mean eigenvalue; and
the policy for a damped curvature that is not positive definite (`positive_definite_damping`).

A ratio carries across models and loss scales where an absolute λ does not. The defaults:
models whose outputs are affine in the attributed parameters have a convex objective, and
influence is then accurate with a touch of damping; non-convex models need much more
(measured on MLPs: benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from influence.batching import to_model
from influence.data import ExampleData
from influence.errors import InfluenceError, InfluenceWarning, InvalidArgumentError
from influence.model import FunctionalModel, is_affine_in_parameters

if TYPE_CHECKING:
    from influence.curvature import Curvature

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


# What a method does when the damped curvature H + λI is not positive definite (an indefinite
# Hessian off a convex model, or a singular curvature with λ = 0): `positive_definite_damping`.
INDEFINITE = ("raise_damping", "abs", "warn")


def check_indefinite_option(value: str, method: str, allowed: tuple[str, ...] = INDEFINITE
                            ) -> None:
    if value not in allowed:
        raise InvalidArgumentError(f"`indefinite` must be one of {list(allowed)} for method "
                                   f"{method!r}, got {value!r}")


def iterative_damping(method: str, mode: str, curvature: Curvature, damping: Damping
                      ) -> tuple[float, dict[str, Any]]:
    """λ for a solver that only has curvature products (cg, lissa): the requested one, raised
    (`mode`) when the curvature can be indefinite and its Lanczos-estimated smallest eigenvalue
    says H + λI is not positive definite; and the diagnostics."""
    lam, source = damping.resolve(curvature.mean_eigenvalue, "mean eigenvalue")
    if curvature.positive_semidefinite:
        return lam, {"damping_source": source}
    return positive_definite_damping(method, mode, lam, source, *curvature.extreme_eigenvalues(),
                                     estimated=True)


def positive_definite_damping(method: str, mode: str, damping: float, source: str, smallest: float,
                              largest: float, estimated: bool = False
                              ) -> tuple[float, dict[str, Any]]:
    """λ that makes `H + λI` positive definite when `mode="raise_damping"`, and diagnostics
    (`damping_source`: `source`, plus how λ was raised).

    Args:
        smallest, largest: the extreme eigenvalues of H (exact, or Lanczos estimates when
            `estimated`; a Ritz value never lies below the true smallest eigenvalue, hence
            the factor 2 below).
    With "raise_damping", a curvature with `smallest + λ <= 0` gets
    `λ ← max(λ + 2·max(−smallest, 0), 1e-6·max|eigenvalue|)`, recorded in
    `damping_raised` and warned about. "abs" (exact, arnoldi) inverts `|e| + λ` instead;
    "warn" keeps λ (queries then warn about negative curvature). A zero curvature with
    λ = 0 cannot be inverted at all: `InfluenceError`.
    """
    info: dict[str, Any] = {"smallest_eigenvalue": float(smallest), "damping_source": source}
    scale = max(abs(smallest), abs(largest))
    if scale == 0 and damping == 0:
        raise InfluenceError(f"{method}: the curvature is zero and damping is 0, so H + λI "
                             "cannot be inverted; pass damping > 0 (is the loss constant in the "
                             "attributed parameters?)")
    if smallest + damping > 0 or mode != "raise_damping":
        return damping, info
    raised = max(damping + 2 * max(-smallest, 0.0), 1e-6 * scale)
    info["damping_raised"] = {"from": damping, "to": raised,
                              "smallest_eigenvalue": float(smallest)}
    info["damping_source"] += (f"; raised from {damping:.4g} to make the curvature positive "
                               "definite")
    how = "a Lanczos estimate" if estimated else "exact"
    if smallest < -1e-8 * scale:
        what = f"is indefinite (smallest eigenvalue {smallest:.4g}, {how})"
        hint = ("Use curvature='ggn' for a positive semi-definite curvature, or indefinite='abs' / "
                "'warn'.")
    else:
        what = f"is singular (smallest eigenvalue {smallest:.3g}, {how})"
        hint = "Pass damping > 0 to choose it yourself."
    warnings.warn(f"{method}: the curvature {what} and damping {damping:.4g} does not make it "
                  f"positive definite; damping raised to {raised:.4g}. {hint}", InfluenceWarning,
                  stacklevel=5)
    return raised, info
