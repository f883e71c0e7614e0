"""Validate before promotion: what removing or fixing candidate training data does to the eval metrics.

Candidates are the most harmful groups of a report (remove the whole group) and the
reviewer's flags (remove the rows flagged "remove" or "mislabeled" without a correction,
relabel those with a corrected label). For each:

- `estimated`: eval accuracy and mean loss of the new model retrained without the candidate,
  from one Newton step (`influence.newton.estimated_metrics`): no retraining, seconds;
- `measured` (with `verify=True`): the user's training function run on the modified training
  data, then evaluated;
- `recovered` / `estimated_recovered`: the fraction of the old → new accuracy drop won back,
  `(accuracy_fixed − accuracy_new) / (accuracy_old − accuracy_new)` (of the mean-loss rise
  for tasks without an accuracy); None when the new model did not get worse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from influence.data import ExampleData, as_data
from influence.errors import InfluenceError, InvalidArgumentError
from influence.newton import Metrics, estimated_metrics, newton_affordable
from influence.report.evaluation import evaluate
from influence.report.flags import Flag, edits


@dataclass
class Candidate:
    """Training data whose removal (or correction) may undo the regression."""

    name: str                      # "source = day-4", "flagged examples"
    kind: str                      # "group" or "flags"
    removed: list[int]
    relabelled: dict[int, int] = field(default_factory=dict)
    column: str | None = None
    value: Any = None


@dataclass
class VerificationEntry:
    """What one candidate does to the eval metrics (see the module docstring)."""

    candidate: str
    kind: str
    column: str | None
    value: Any
    removed: int
    relabelled: int
    estimated: dict | None
    measured: dict | None
    estimated_recovered: float | None
    recovered: float | None
    seconds: float
    note: str | None = None


def group_candidates(groups: Sequence, labels: dict[str, list], count: int) -> list[Candidate]:
    """The `count` most harmful groups (harm > 0) as candidates; `groups` is ranked, most
    harmful first (report `GroupEntry`s), `labels` holds each column's label per example."""
    out = []
    for g in [g for g in groups if g.harm > 0][:count]:
        column = labels[g.column]
        rows = [i for i, v in enumerate(column) if v == g.value]
        out.append(Candidate(f"{g.column} = {g.value}", "group", rows, column=g.column, value=g.value))
    return out


def flag_candidate(flags: Sequence[Flag], n_train: int, class_names: Sequence[str] | None) -> Candidate | None:
    """The reviewer's flags as one candidate, or None when they change nothing ("keep" only)."""
    removed, relabel = edits(flags, n_train, class_names)
    if not removed and not relabel:
        return None
    return Candidate(f"flagged examples ({len(removed)} removed, {len(relabel)} relabelled)", "flags", removed,
                     relabel)


def recovered(old: Metrics, new: Metrics, fixed: Metrics) -> float | None:
    """Fraction of the old → new accuracy drop (or mean-loss rise) that `fixed` wins back."""
    if old.accuracy is not None and new.accuracy is not None and fixed.accuracy is not None:
        drop = old.accuracy - new.accuracy
        return (fixed.accuracy - new.accuracy) / drop if drop > 0 else None
    rise = new.mean_loss - old.mean_loss
    return (new.mean_loss - fixed.mean_loss) / rise if rise > 0 else None


def modified_training_data(train: Any, removed: Sequence[int], relabel: dict[int, int], label_column: str) -> Any:
    """`train` without the `removed` rows and with `relabel` applied, in the same form:
    a `datasets.Dataset` (same columns) or a tuple of tensors `(X, y)`."""
    n = len(train[0]) if isinstance(train, tuple) else len(train)
    keep = np.setdiff1d(np.arange(n), np.asarray(removed, dtype=np.int64))
    if isinstance(train, tuple):
        X, y = (torch.as_tensor(t) for t in train)
        y = y.clone()
        for i, c in relabel.items():
            y[i] = c
        return X[keep], y[keep]
    if not hasattr(train, "select"):
        raise InvalidArgumentError("`retrain` needs `train` as a datasets.Dataset or a tuple (X, y)")
    labels = list(train[label_column])
    for i, c in relabel.items():
        labels[i] = c
    fixed = train.remove_columns(label_column).add_column(label_column, labels) if relabel else train
    return fixed.select(keep.tolist())


def verify(candidates: Sequence[Candidate], attr, train: Any, train_data: ExampleData, eval_data: ExampleData,
           task, old: Metrics, new: Metrics, retrain: Callable[[Any], nn.Module] | None = None,
           measure: bool = False, label_column: str = "label", batch_size: int = 1024) -> list[VerificationEntry]:
    """Estimated (and, with `measure`, measured) eval metrics of each candidate's fix.

    Args:
        candidates: from `group_candidates` / `flag_candidate`.
        attr: the fitted Attributor of the new model.
        train: the training data as the user gave it (passed, modified, to `retrain`);
            `train_data` is the same read as tensors.
        old, new: the eval metrics of the old and the new model.
        retrain: `retrain(modified_train) -> nn.Module`, a trained model; required by `measure`.
    """
    if measure and retrain is None:
        raise InvalidArgumentError("`verify=True` needs `retrain`, a function that trains the new model's "
                                   "architecture on given training data (the CLI: --retrain module:function)")
    out = []
    for c in candidates:
        started = time.perf_counter()
        estimated, note = None, None
        if newton_affordable(attr, train_data):
            estimated = estimated_metrics(attr, eval_data, c.removed, c.relabelled, train=train_data)
        else:
            note = "not estimated: the Newton step needs a curvature method with at most 5000 parameters"
        measured = _measure(retrain, train, c, eval_data, task, label_column, batch_size) if measure else None
        out.append(VerificationEntry(
            c.name, c.kind, c.column, c.value, len(c.removed), len(c.relabelled),
            None if estimated is None else estimated.to_dict(), None if measured is None else measured.to_dict(),
            None if estimated is None else recovered(old, new, estimated),
            None if measured is None else recovered(old, new, measured), round(time.perf_counter() - started, 3),
            note))
    return out


def _measure(retrain: Callable, train: Any, c: Candidate, eval_data: ExampleData, task, label_column: str,
             batch_size: int) -> Metrics:
    data = modified_training_data(train, c.removed, c.relabelled, label_column)
    try:
        model = retrain(data)
    except InfluenceError:
        raise
    except Exception as error:
        raise InvalidArgumentError(f"`retrain` failed on the training data without {c.name}: "
                                   f"{type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"`retrain` must return the trained torch.nn.Module, got {type(model).__name__}")
    result = evaluate(model, as_data(eval_data, "eval"), task, "the retrained model", batch_size)
    accuracy = None if result["correct"] is None else float(result["correct"].mean())
    return Metrics(accuracy, float(result["losses"].mean()))
