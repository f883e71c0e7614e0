"""Rankings behind the regression report: the shares and confidence of groups (the most harmful
examples and how many regressions each harms: `influence.scoring.top_k`, `influence.harm`).

Harm comes from `influence.harm` (the one definition): per training example
`harm_i = −Σ_j scores[j, i] / n_train`, per group the group-removal Newton step or the sum of
its members' harm, in units of the eval loss, so harm > 0 means "pushed the regressed
examples' loss up". A group's `share` is its harm divided by the summed harm of the harmful
groups of the same column (the shares of the harmful groups of one column add up to 1).

Sign convention (the package's): `scores[j, i] > 0` means training example i helped
regression j (removing it would raise j's loss), `< 0` means it harmed it.

Confidence of a group: a permutation test against random groups of the same size drawn
from the same training set (`confidence = 1 − p`, p with the +1 correction), and a
bootstrap over the regressions (how stable its share and its first place are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GroupStats:
    """Harm of each value of one group column (arrays of length g, in `values` order).

    `harm` comes from `estimator` ("newton": group-removal Newton step, or "first_order":
    the sum of the members' scores); `first_order_harm` is always the latter.
    """

    column: str
    values: list
    count: np.ndarray
    harm: np.ndarray
    first_order_harm: np.ndarray
    estimator: str
    share: np.ndarray
    p_value: np.ndarray
    share_low: np.ndarray
    share_high: np.ndarray
    top_rate: np.ndarray


def shares(harm: np.ndarray) -> np.ndarray:
    """`harm / Σ max(harm, 0)` along the last axis (0 where no group is harmful)."""
    total = np.clip(harm, 0, None).sum(axis=-1, keepdims=True)
    return np.divide(harm, total, out=np.zeros_like(harm, dtype=np.float64), where=total > 0)


def permutation_p_values(example_harm: np.ndarray, sizes: np.ndarray, observed: np.ndarray, permutations: int,
                         rng: np.random.Generator, inflate: bool = False, chunk: int = 64) -> np.ndarray:
    """P(random group of the same size has harm ≥ observed), one-sided, (1 + #≥) / (1 + P).

    Each permutation of the training set gives random groups of every size at once (its
    prefix sums), so the cost is O(permutations × n_train) whatever the number of groups.
    With `inflate`, a random group's harm is scaled by n / (n − m), which is what the Newton
    step for removing it gives when its curvature is the average one (H_G = (m/n) H).
    """
    n = len(example_harm)
    sizes = np.clip(np.asarray(sizes, dtype=np.int64), 1, n)
    scale = n / np.maximum(n - sizes, 1) if inflate else np.ones(len(sizes))
    exceed = np.zeros(len(sizes))
    done = 0
    while done < permutations:
        b = min(chunk, permutations - done)
        shuffled = rng.permuted(np.tile(example_harm, (b, 1)), axis=1)
        null = np.cumsum(shuffled, axis=1)[:, sizes - 1] * scale  # [b, g]
        exceed += (null >= np.asarray(observed)[None, :] - 1e-12 * np.abs(observed)).sum(axis=0)
        done += b
    return (1.0 + exceed) / (1.0 + permutations)


def group_stats(column: str, values: list, count: np.ndarray, per_regression: np.ndarray, first_order: np.ndarray,
                example_harm: np.ndarray, estimator: str, permutations: int, bootstrap: int,
                rng: np.random.Generator) -> GroupStats:
    """Harm, share and confidence of every value of one group column.

    Args:
        column, values, count: the column name, its distinct values and their sizes.
        per_regression: float[n_regressions, g], harm of each group on each regression
            (positive = harmful), from `estimator`.
        first_order: float[n_regressions, g], the same from summed first-order scores.
        example_harm: float[n_train], `−scores.sum(0)` (first-order, for the permutation null).
    """
    harm = per_regression.sum(axis=0)
    p_value = permutation_p_values(example_harm, count, harm, permutations, rng, inflate=estimator == "newton")
    r = per_regression.shape[0]
    if r and bootstrap:
        weights = rng.multinomial(r, np.full(r, 1.0 / r), size=bootstrap).astype(np.float64)  # [B, r]
        boot = weights @ per_regression  # [B, g]
        low, high = np.percentile(shares(boot), [5, 95], axis=0)
        top_rate = np.bincount(boot.argmax(axis=1), minlength=len(values)) / bootstrap
    else:
        low = high = shares(harm)
        top_rate = np.zeros(len(values))
    return GroupStats(column, values, count, harm, first_order.sum(axis=0), estimator, shares(harm), p_value, low,
                      high, top_rate)


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """Fraction of `values` ≤ each value (1.0 = the largest)."""
    order = np.sort(values)
    return np.searchsorted(order, values, side="right") / len(values)
