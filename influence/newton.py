"""The group-removal Newton step: the fitted model as a flat parameter vector θ with its dense
damped curvature `H + λI` (p ≤ `NEWTON_MAX_PARAMS`), and what it estimates without retraining.

Removing the training examples R (and correcting the labels of L) moves θ by one Newton step,

    Δθ = (H + λI − H_R)⁻¹ (Σ_R ∇ℓ_i + Σ_L [∇ℓ_i(y_i) − ∇ℓ_i(y'_i)]) / n_train,

with `H_R = (1/n_train) Σ_{i∈R} ∇²ℓ_i` (a label change leaves a Gauss-Newton curvature
unchanged). `influence.harm.group_harm` uses it for the harm of removing a whole group;
`estimated_metrics` turns it into the eval metrics (accuracy, mean loss) of the model retrained
without some examples or with some labels corrected: what the report's `verification` calls
"estimated".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from influence.batching import to_model
from influence.curvature import Curvature, damped_dense
from influence.data import ExampleData
from influence.errors import InvalidArgumentError

if TYPE_CHECKING:
    from influence.attributor import Attributor

NEWTON_MAX_PARAMS = 5000  # the dense p×p curvature (and one per group) is affordable up to this p


def indexed_examples(attr: Attributor) -> int:
    """n_train of a fitted Attributor (InvalidArgumentError when it is not fitted)."""
    if attr.diagnostics is None:
        raise InvalidArgumentError("`attr` is not fitted: call fit(), or open it with "
                                   "Attributor.load()")
    return attr.diagnostics.n_train


def training_data(attr: Attributor, train: Any) -> ExampleData | None:
    """`train` read the Attributor's way, or the Attributor's own training data (None if loaded
    without it)."""
    return attr.train if train is None else attr.read_data(train, "train")


def newton_affordable(attr: Attributor, train: Any = None) -> bool:
    """True when the group-removal Newton step can run: a curvature method (its kind in the
    diagnostics), at most NEWTON_MAX_PARAMS attributed parameters, and the training data."""
    d = attr.diagnostics
    return (d is not None and d.curvature is not None and training_data(attr, train) is not None
            and d.n_params <= NEWTON_MAX_PARAMS)


def require_newton(attr: Attributor, data: ExampleData | None) -> None:
    if not newton_affordable(attr, data):
        d = attr.diagnostics
        raise InvalidArgumentError(
            f"the group-removal estimate needs the training data and a curvature method with at "
            f"most {NEWTON_MAX_PARAMS} attributed parameters (this model has "
            f"{d and d.n_params}, method {d and d.method!r}); use the first-order estimate instead")


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
    data = training_data(attr, train)
    require_newton(attr, data)
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
        # the Attributor's view of the model: same parameters and forward, always in eval mode
        self.fm = attr.fm
        self.task, self.train, self.n, self.batch_size = attr.task, train, len(train), batch_size
        self.kind = attr.diagnostics.curvature
        if self.n != indexed_examples(attr):
            raise InvalidArgumentError(f"`train` has {self.n} examples but the index has "
                                       f"{indexed_examples(attr)}")
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
        return per_example_grads(self.fm, self.task.measurement, self._cast(X),
                                 y.to(self.fm.device))

    def gradient_sums(self, codes: np.ndarray, n_groups: int) -> Tensor:
        """Σ_{i∈G} ∇ℓ_i for every group: Tensor[n_groups, p] (one backward pass per group and
        batch)."""
        sums = torch.zeros(n_groups, self.fm.p, dtype=self.fm.dtype, device=self.fm.device)
        theta = self.fm.theta.clone().requires_grad_(True)
        for rows, x, y in self.train.batches(self.batch_size):
            losses = self.task.loss(self.fm(theta, self._cast(x)), y.to(self.fm.device))
            batch = torch.as_tensor(codes[rows.start:rows.stop], device=self.fm.device)
            present = batch.unique().tolist()
            for k, g in enumerate(present):
                weight = (batch == g).to(losses.dtype)
                retain = k + 1 < len(present)
                sums[g] += torch.autograd.grad(losses @ weight, theta, retain_graph=retain)[0]
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
        new = per_example_grads(self.fm, self.task.loss, self._cast(X),
                                corrected.to(self.fm.device))
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

