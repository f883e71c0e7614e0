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
  p ≤ `NEWTON_MAX_PARAMS`.

`estimated_metrics` turns the same Newton step into the eval metrics (accuracy, mean loss) of the
model retrained without some examples, or with some labels corrected: what the report's
`verification` calls "estimated".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from influence import scoring
from influence.batching import to_model
from influence.curvature import Curvature, damped_dense
from influence.data import ExampleData
from influence.errors import InvalidArgumentError
from influence.results import Ranking

if TYPE_CHECKING:
    from influence.attributor import Attributor

NEWTON_MAX_PARAMS = 5000  # the dense p×p curvature (and one per group) is affordable up to this p
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
            p ≤ NEWTON_MAX_PARAMS) or "auto" (newton when affordable and the column has at
            most NEWTON_MAX_GROUPS values).
        train: the training data (default: the Attributor's); only the Newton step reads it.
    Returns:
        `GroupHarm`; `.harm` is in units of the eval loss, > 0 = the group caused the losses.
    """
    if estimator not in ESTIMATORS:
        raise InvalidArgumentError(f"`estimator` must be one of {ESTIMATORS}, got {estimator!r}")
    n = _n_train(attr)
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
    data = _training_data(attr, train)
    if not _use_newton(estimator, attr, data, len(values)):
        return GroupHarm(values, count, first)
    space = ParameterSpace(attr, data)
    Q = space.query_gradients(queries)
    sums = space.gradient_sums(codes, len(values))
    newton = np.stack([-(Q @ space.removal_step(np.flatnonzero(codes == g), sums[g])).double().cpu().numpy()
                       for g in range(len(values))], axis=1) if len(values) else np.zeros((len(Q), 0))
    return GroupHarm(values, count, first, newton)


def _n_train(attr: Attributor) -> int:
    if attr.diagnostics is None:
        raise InvalidArgumentError("`attr` is not fitted: call fit(), or open it with Attributor.load()")
    return attr.diagnostics.n_train


def _training_data(attr: Attributor, train: Any) -> ExampleData | None:
    return attr.train if train is None else attr.read_data(train, "train")


def newton_affordable(attr: Attributor, train: Any = None) -> bool:
    """True when the group-removal Newton step can run: a curvature method (its kind in the
    diagnostics), at most NEWTON_MAX_PARAMS attributed parameters, and the training data."""
    d = attr.diagnostics
    return (d is not None and d.curvature is not None and _training_data(attr, train) is not None
            and d.n_params <= NEWTON_MAX_PARAMS)


def _require_newton(attr: Attributor, data: ExampleData | None) -> None:
    if not newton_affordable(attr, data):
        d = attr.diagnostics
        raise InvalidArgumentError(
            f"the group-removal estimate needs the training data and a curvature method with at most "
            f"{NEWTON_MAX_PARAMS} attributed parameters (this model has {d and d.n_params}, "
            f"method {d and d.method!r}); use the first-order estimate instead")


def _use_newton(estimator: str, attr: Attributor, data: ExampleData | None, n_groups: int) -> bool:
    if estimator == "first_order" or n_groups < 1:
        return False
    if estimator == "newton":
        _require_newton(attr, data)
        return True
    return newton_affordable(attr, data) and n_groups <= NEWTON_MAX_GROUPS


# ---------------------------------------------------------------------------- estimated metrics
@dataclass
class Metrics:
    """Eval metrics of a model: `accuracy` (classification, else None) and `mean_loss`."""

    accuracy: float | None
    mean_loss: float

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "mean_loss": self.mean_loss}


def estimated_metrics(attr: Attributor, eval: Any, remove: Sequence[int] = (),
                      relabel: Mapping[int, int] | None = None, train: Any = None) -> Metrics:
    """Eval metrics of the model retrained without `remove` and with `relabel` applied,
    estimated by one Newton step from the fitted model (no retraining).

    Args:
        attr: a fitted Attributor whose model is the one to modify.
        eval: the eval data (any form the Attributor accepts).
        remove: training indices removed.
        relabel: {training index: corrected class index}.
        train: the training data (default: the Attributor's).
    Returns:
        `Metrics` of `θ + Δθ`, `Δθ = (H + λI − H_R)⁻¹ (Σ_R ∇ℓ_i + Σ_L [∇ℓ_i(y_i) − ∇ℓ_i(y'_i)]) / n`
        (R removed, L relabelled; the label change leaves a Gauss-Newton curvature unchanged).
    Raises:
        InvalidArgumentError when the dense curvature is not affordable (p > NEWTON_MAX_PARAMS),
        the training data is missing, or an index is out of range.
    """
    data = _training_data(attr, train)
    _require_newton(attr, data)
    space = ParameterSpace(attr, data)
    relabel = dict(relabel or {})
    rows = np.asarray(sorted(set(int(i) for i in remove)), dtype=np.int64)
    for i in list(rows) + list(relabel):
        if not 0 <= int(i) < space.n:
            raise InvalidArgumentError(f"training index {i} is out of range [0, {space.n - 1}]")
    gradient = space.removal_gradient(rows) + space.relabel_gradient(relabel)
    theta = space.fm.theta + space.removal_step(rows, gradient)
    return space.metrics(attr.read_data(eval, "eval"), theta)


class ParameterSpace:
    """The fitted model as a flat parameter vector θ with its dense damped curvature `H + λI`:
    the Newton steps behind group-removal harm and estimated metrics (p ≤ NEWTON_MAX_PARAMS)."""

    def __init__(self, attr: Attributor, train: ExampleData, batch_size: int = 512):
        self.attr = attr
        self.fm = attr.fm  # the Attributor's view of the model: same parameters and forward, always in eval mode
        self.task, self.train, self.n, self.batch_size = attr.task, train, len(train), batch_size
        self.kind = attr.diagnostics.curvature
        if self.n != _n_train(attr):
            raise InvalidArgumentError(f"`train` has {self.n} examples but the index has {_n_train(attr)}")
        held = attr.method.damped_curvature()  # a method that factorised H + λI holds it
        if held is None:
            curvature = Curvature(self.fm, self.task, train, self.kind)
            held = damped_dense(curvature, float(attr.damping))
        self.full = held.to(self.fm.dtype)

    def _cast(self, x: Tensor) -> Tensor:
        return to_model(x, self.fm.device, self.fm.dtype)

    def query_gradients(self, queries: Any) -> Tensor:
        """∇m(query_j) for every query, Tensor[n_queries, p]."""
        from influence.gradients import per_example_grads

        data = self.attr.read_data(queries, "queries")
        X, y = data.batch(range(len(data)))
        return per_example_grads(self.fm, self.task.measurement, self._cast(X), y.to(self.fm.device))

    def gradient_sums(self, codes: np.ndarray, n_groups: int) -> Tensor:
        """Σ_{i∈G} ∇ℓ_i for every group: Tensor[n_groups, p] (one backward pass per group and batch)."""
        sums = torch.zeros(n_groups, self.fm.p, dtype=self.fm.dtype, device=self.fm.device)
        theta = self.fm.theta.clone().requires_grad_(True)
        for rows, x, y in self.train.batches(self.batch_size):
            losses = self.task.loss(self.fm(theta, self._cast(x)), y.to(self.fm.device))
            batch = torch.as_tensor(codes[rows.start:rows.stop], device=self.fm.device)
            present = batch.unique().tolist()
            for k, g in enumerate(present):
                weight = (batch == g).to(losses.dtype)
                sums[g] += torch.autograd.grad(losses @ weight, theta, retain_graph=k + 1 < len(present))[0]
        return sums

    def removal_gradient(self, rows: np.ndarray) -> Tensor:
        """Σ_{i∈rows} ∇ℓ_i, Tensor[p]."""
        codes = np.ones(self.n, dtype=np.int64)
        codes[rows] = 0
        return self.gradient_sums(codes, 2)[0] if len(rows) else torch.zeros_like(self.fm.theta)

    def relabel_gradient(self, relabel: Mapping[int, int]) -> Tensor:
        """Σ_{i∈L} [∇ℓ_i(y_i) − ∇ℓ_i(y'_i)], Tensor[p]."""
        from influence.gradients import per_example_grads

        if not relabel:
            return torch.zeros_like(self.fm.theta)
        rows = sorted(relabel)
        X, y = self.train.batch(rows)
        corrected = torch.tensor([relabel[i] for i in rows], dtype=y.dtype)
        old = per_example_grads(self.fm, self.task.loss, self._cast(X), y.to(self.fm.device))
        new = per_example_grads(self.fm, self.task.loss, self._cast(X), corrected.to(self.fm.device))
        return (old - new).sum(dim=0)

    def removal_step(self, rows: np.ndarray, gradient: Tensor) -> Tensor:
        """Δθ = (H + λI − H_rows)⁻¹ gradient / n: one Newton step after removing `rows`."""
        reduced = self.full
        if len(rows):
            subset = self.train.subset([int(i) for i in rows])
            eye = torch.eye(self.fm.p, dtype=self.fm.dtype, device=self.fm.device)
            group = Curvature(self.fm, self.task, subset, self.kind, self.batch_size).dense()
            reduced = self.full - (group - self.task.weight_decay * eye) * (len(rows) / self.n)
        return torch.linalg.solve(reduced, gradient.to(self.fm.dtype)) / self.n

    def metrics(self, data: ExampleData, theta: Tensor) -> Metrics:
        """Accuracy (classification) and mean loss of the model at `theta` on `data`."""
        from influence.task import ClassificationTask

        losses, correct = [], []
        with torch.no_grad():
            for _, x, y in data.batches(4096):
                out = self.fm(theta, self._cast(x))
                y = y.to(self.fm.device)
                losses.append(self.task.loss(out, y).double().cpu())
                if isinstance(self.task, ClassificationTask):
                    correct.append((out.argmax(dim=-1) == y).cpu())
        loss = torch.cat(losses)
        accuracy = float(torch.cat(correct).double().mean()) if correct else None
        return Metrics(accuracy, float(loss.mean()))

