"""Harm: how much training examples, or groups of them, caused bad predictions. One definition,
used by the regression report, the CLI and every tab of the app.

Sign convention (the package's): `score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`, and removing
training example i changes the loss of test example j by about `+score[j, i] / n_train`.
Positive = helpful, negative = harmful.

Harm is the estimated *decrease* of the loss of the queried examples (e.g. the regressions of a
report, or the worst wrong predictions) if the training examples were removed, **in units of the
eval loss** (nats for cross-entropy), summed over the queried examples. So harm > 0 means "they
pushed those losses up"; harm < 0 means removing them would make things worse.

- example harm (first order):   `h_i = −Σ_j score[j, i] / n_train`
- queries harmed ("regressions harmed"): for how many queried examples j training example i
  is among the k lowest scores *and* `score[j, i] < 0` (`harmed_counts`)
- group harm, first order:      `h_G = Σ_{i∈G} h_i` (the sum of its members' harm)
- group harm, group removal:    `h_G = −Σ_j q_jᵀ Δθ_G`, one Newton step for removing the whole group,
  `Δθ_G = (H + λI − H_G)⁻¹ Σ_{i∈G} ∇ℓ_i / n_train` with `H_G = (1/n_train) Σ_{i∈G} ∇²ℓ_i`.
  A large, coherent group (a corrupted batch) can dominate the curvature, and the first-order
  sum then misses its effect, even its sign; the Newton step does not (tested against
  retraining in `tests/test_harm.py`). It needs the dense p×p curvature, so it is used when
  p ≤ `influence.newton.NEWTON_MAX_PARAMS`.

The Newton step itself (and `estimated_metrics`, the same step turned into eval metrics) is
`influence.newton`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from influence import scoring
from influence.data import ExampleData
from influence.errors import InvalidArgumentError
from influence.newton import (
    ParameterSpace,
    indexed_examples,
    newton_affordable,
    require_newton,
    training_data,
)
from influence.results import Ranking

if TYPE_CHECKING:
    from influence.attributor import Attributor

NEWTON_MAX_GROUPS = 50  # estimator="auto": group removal for columns with at most this many values
ESTIMATORS = ("auto", "newton", "first_order")


def example_harm(scores: Tensor | np.ndarray, n_train: int) -> np.ndarray:
    """Harm of every training example on the queried examples: `−Σ_j score[j, i] / n_train`.

    Args:
        scores: Tensor or array [n_queries, n_train] from `Attributor.scores`.
        n_train: the number of training examples the scores are normalised by.
    Returns:
        float64 array [n_train]; > 0 = removing the example would lower the queried losses.
    """
    values = scores.detach().double().cpu().numpy() if isinstance(scores, Tensor) else np.asarray(scores, np.float64)
    if values.ndim != 2 or values.shape[1] != n_train:
        raise InvalidArgumentError(f"`scores` must have shape [n_queries, {n_train}], got {values.shape}")
    return -values.sum(axis=0) / n_train


def harmed_counts(harmful: Ranking, n_train: int) -> np.ndarray:
    """For how many queried examples each training example is among the k most harmful and
    harms it (score < 0): "regressions harmed" in the report, "harmed" in the app.

    Args:
        harmful: `Attributor.top_k(queries, k).harmful` (or `influence.scoring.top_k`'s).
        n_train: the number of training examples.
    Returns:
        int64 array [n_train].
    """
    indices = harmful.indices[harmful.scores < 0]
    return torch.bincount(indices.reshape(-1).cpu(), minlength=n_train).numpy().astype(np.int64)


@dataclass
class GroupHarm:
    """Harm of each group of training examples on each queried example.

    Attributes:
        values: the distinct group labels, first-appearance order (length g).
        count: int array [g], training examples per group.
        first_order: float array [n_queries, g], `−Σ_{i∈G} score[j, i] / n_train`.
        newton: float array [n_queries, g] from the group-removal Newton step, or None.
    Units: the eval loss (summed over the queried examples by `harm`); > 0 = harmful.
    """

    values: list
    count: np.ndarray
    first_order: np.ndarray
    newton: np.ndarray | None = None

    @property
    def estimator(self) -> str:
        """"newton" (group removal) or "first_order": what `per_query` and `harm` hold."""
        return "first_order" if self.newton is None else "newton"

    @property
    def per_query(self) -> np.ndarray:
        """[n_queries, g]: the preferred estimate (group removal when it was computed)."""
        return self.first_order if self.newton is None else self.newton

    @property
    def harm(self) -> np.ndarray:
        """[g]: total harm of each group over the queried examples (`per_query` summed)."""
        return self.per_query.sum(axis=0)

    @property
    def first_order_harm(self) -> np.ndarray:
        """[g]: the first-order total, always available."""
        return self.first_order.sum(axis=0)


def group_codes(labels: Sequence) -> tuple[list, np.ndarray]:
    """Distinct values (first-appearance order) and each example's group code, int [n]
    (`influence.scoring.group_codes`, as a NumPy array)."""
    values, codes = scoring.group_codes(labels, None, len(labels))
    return values, codes.numpy().astype(np.int64)


def group_harm(attr: Attributor, queries: Any, labels: Sequence, *,
               scores: Tensor | np.ndarray | None = None, estimator: str = "auto",
               train: Any = None) -> GroupHarm:
    """Harm of each group of training examples on the queried examples.

    Args:
        attr: a fitted `influence.Attributor`.
        queries: the queried examples (any data form the Attributor accepts), n_queries rows.
        labels: one group label per training example (e.g. a `source` column).
        scores: `attr.scores(queries)` if already computed ([n_queries, n_train]).
        estimator: "first_order", "newton" (group removal; needs the training data and
            p ≤ newton.NEWTON_MAX_PARAMS) or "auto" (newton when affordable and the column has at
            most NEWTON_MAX_GROUPS values).
        train: the training data (default: the Attributor's); only the Newton step reads it.
    Returns:
        `GroupHarm`; `.harm` is in units of the eval loss, > 0 = the group caused the losses.
    """
    if estimator not in ESTIMATORS:
        raise InvalidArgumentError(f"`estimator` must be one of {ESTIMATORS}, got {estimator!r}")
    n = indexed_examples(attr)
    if len(labels) != n:
        raise InvalidArgumentError(f"`labels` has {len(labels)} entries but the index has {n} training examples")
    values, codes = group_codes(list(labels))
    count = np.bincount(codes, minlength=len(values))
    if scores is not None:
        scores = torch.as_tensor(scores).detach().double().cpu()
        totals = scoring.group_totals([(0, scores)], values, torch.as_tensor(codes))
    else:
        totals = attr.group_scores(queries, codes.tolist())  # codes 0..g-1 appear in order: same columns
    first = -totals.sum.detach().double().cpu().numpy() / n
    data = training_data(attr, train)
    if not _use_newton(estimator, attr, data, len(values)):
        return GroupHarm(values, count, first)
    space = ParameterSpace(attr, data)
    Q = space.query_gradients(queries)
    sums = space.gradient_sums(codes, len(values))
    newton = np.stack([-(Q @ space.removal_step(np.flatnonzero(codes == g), sums[g])).double().cpu().numpy()
                       for g in range(len(values))], axis=1) if len(values) else np.zeros((len(Q), 0))
    return GroupHarm(values, count, first, newton)


def _use_newton(estimator: str, attr: Attributor, data: ExampleData | None, n_groups: int) -> bool:
    if estimator == "first_order" or n_groups < 1:
        return False
    if estimator == "newton":
        require_newton(attr, data)
        return True
    return newton_affordable(attr, data) and n_groups <= NEWTON_MAX_GROUPS
