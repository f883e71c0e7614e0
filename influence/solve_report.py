"""What one query tells the user about its solves: collected over blocks, said once.

An iterative method (cg, lissa) solves once per block of right-hand sides; a query may run
many blocks (self-influence over the training set). `SolveReport` keeps the worst of them,
raises at once on a diverged solve, and warns once per query — with the number that
matters and the advice that would help (more iterations only when the cap was the limit).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from influence.errors import InfluenceError, InfluenceWarning
from influence.solvers import SolveInfo


class SolveReport:
    """A context for one query: `add` each block's solve; on exit the worst one is handed to
    `record` (even when a diverged solve raised) and warnings are given once.

    Args:
        method, damping: for the messages.
        diagnostics: the attributor's diagnostics (its `negative_curvature`, found by a direct
            method's factorisation at fit time, is warned about on every query).
        record: called on exit with `summary()` (the Attributor keeps it as `last_solve`).
    """

    def __init__(self, method: str, damping: float | None, diagnostics: Mapping[str, Any],
                 record: Callable[[dict[str, Any] | None], None]):
        self.method, self.damping, self.record = method, damping, record
        self.worst: SolveInfo | None = None
        self.negative = bool(diagnostics.get("negative_curvature", False))
        self.notes: set[str] = set()

    def __enter__(self) -> SolveReport:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.record(self.summary())
        if error is None:
            self.finish()

    def add(self, X: Tensor, info: SolveInfo | None) -> Tensor:
        """Record one block's solve; returns X. Raises `InfluenceError` if it diverged."""
        if info is None:
            return X
        if self.worst is None or (not info.converged, info.residual) > (not self.worst.converged,
                                                                        self.worst.residual):
            self.worst = info
        if info.diverged:
            hint = " or a larger `scale` (scale=None picks one above the largest eigenvalue)" \
                if info.solver == "lissa" else ""
            raise InfluenceError(f"{self.method} diverged: relative residual {info.residual:.3g} after "
                                 f"{info.iterations} iterations (the damped curvature is not positive definite, "
                                 f"or the products overflow). Raise `damping`, use curvature='ggn'{hint}. "
                                 f"Diagnostics: {info.as_dict()}")
        self.negative |= info.negative_curvature
        if info.note:
            self.notes.add(info.note)
        return X

    def summary(self) -> dict[str, Any] | None:
        """The worst solve's diagnostics (None for a direct method)."""
        return None if self.worst is None else {**self.worst.as_dict(), "notes": sorted(self.notes)}

    def finish(self) -> None:
        """Warn (once) about what went wrong."""
        if self.negative:
            warnings.warn(f"{self.method}: the damped curvature has negative eigenvalues (damping={self.damping:.4g}); "
                          "scores may be meaningless. Use curvature='ggn' or a larger damping.",
                          InfluenceWarning, stacklevel=4)
        info = self.worst
        if info is None or info.converged:
            return
        if info.max_iter_reached:
            advice = "raise max_iter, or damping (a better-conditioned system)"
        else:
            advice = (f"it stagnated below its {info.iterations}-iteration cap, at the precision the model's dtype "
                      "allows for this conditioning: attribute a float64 copy of the model, or raise damping")
        warnings.warn(f"{self.method} did not converge: relative residual {info.residual:.3g} (tolerance "
                      f"{info.tol:.3g}) after {info.iterations} iterations; {advice}.", InfluenceWarning, stacklevel=4)
