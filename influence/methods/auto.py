"""`method="auto"` (the default): a method chosen from the problem's size, and why.

Every choice answers queries and self-influence with products against a factorisation
computed once — never an iterative solve per query — and keeps the index small.
"""

from __future__ import annotations

from influence.model import FunctionalModel

# `exact` while its p×p eigendecomposition takes seconds and the n×p index fits in memory.
EXACT_MAX_PARAMS = 5_000
INDEX_BUDGET_BYTES = 2 << 30


def choose(fm: FunctionalModel, n_train: int) -> tuple[str, dict, str]:
    """(method name, its options, the reason in words) for a model and training-set size."""
    p = fm.p
    index_bytes = n_train * p * fm.dtype.itemsize
    if p <= EXACT_MAX_PARAMS and index_bytes <= INDEX_BUDGET_BYTES:
        return "exact", {}, (f"p = {p:,} ≤ {EXACT_MAX_PARAMS:,}: the exact curvature, factorised once "
                             f"(index {index_bytes / 2**20:.0f} MiB)")
    return "trak", {"projection": "countsketch"}, (f"p = {p:,}: projected gradients (count-sketch, k = 2048) "
                                                   "with their empirical Fisher")
