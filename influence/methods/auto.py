"""`method="auto"` (the default): a method chosen from the problem's size, and why.

Every choice answers queries and self-influence with products against a factorisation
computed once — never an iterative solve per query — and keeps the index small.
"""

from __future__ import annotations

from typing import Any

from influence.errors import InvalidArgumentError
from influence.methods.base import Method, method_class
from influence.model import FunctionalModel

# `exact` while its p×p eigendecomposition takes seconds and the n×p index fits in memory.
EXACT_MAX_PARAMS = 5_000
INDEX_BUDGET_BYTES = 2 << 30


def build_method(name: str, options: dict[str, Any], fm: FunctionalModel, n_train: int | None
                 ) -> tuple[Method, str]:
    """The method `name` with its options made concrete for this problem (`"auto"`: chosen
    here), and how it was chosen, in words."""
    reason = f"method={name!r} given"
    if name == "auto":
        if options:
            raise InvalidArgumentError(f"method='auto' takes no method options (got {sorted(options)}); "
                                       "name a method to pass its options")
        name, options, reason = choose(fm, n_train or 0)
    cls = method_class(name)
    return cls(**cls.resolve_options(options, fm, n_train)), reason


def choose(fm: FunctionalModel, n_train: int) -> tuple[str, dict, str]:
    """(method name, its options, the reason in words) for a model and training-set size."""
    p = fm.p
    index_bytes = n_train * p * fm.dtype.itemsize
    if p <= EXACT_MAX_PARAMS and index_bytes <= INDEX_BUDGET_BYTES:
        return "exact", {}, (f"p = {p:,} ≤ {EXACT_MAX_PARAMS:,}: the exact curvature, factorised once "
                             f"(index {index_bytes / 2**20:.0f} MiB)")
    return "trak", {"projection": "countsketch"}, (f"p = {p:,}: projected gradients (count-sketch, k = 2048) "
                                                   "with their empirical Fisher")
