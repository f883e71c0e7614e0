"""The gradient pass: a method's per-example features φ(∇ fn) over a data set, checked.

For the training side fn is the task's loss (what the index stores); for the test side its
measurement. Every batch is checked first (the model runs on the inputs, the task accepts
the labels), and non-finite gradients are an error, never a silent NaN score.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from influence.batching import take, to_model
from influence.data import ExampleData
from influence.errors import InfluenceError, InfluenceWarning
from influence.fingerprint import batch_fingerprints, digest
from influence.gradients import check_targets
from influence.methods import Method
from influence.model import FunctionalModel
from influence.progress import phase
from influence.scoring import check_finite
from influence.task import Task


class FeaturePass:
    """Computes `method.features` of `fn` for batches or whole data sets.

    Args:
        method, fm, task: what is attributed and how.
        batch_size: examples per vectorised gradient computation (bounds memory).
        progress: show a progress bar for passes over at least 5,000 examples.
    """

    def __init__(self, method: Method, fm: FunctionalModel, task: Task, batch_size: int, progress: bool):
        self.method, self.fm, self.task, self.batch_size, self.progress = method, fm, task, batch_size, progress

    @property
    def dim(self) -> int:
        return self.method.feature_dim(self.fm)

    def batch(self, inputs, targets: Tensor, fn: Callable, argument: str) -> Tensor:
        """Checked per-example features of `fn` for one batch: Tensor[b, feature_dim]."""
        targets = targets.to(self.fm.device)
        check_targets(self.fm, self.task, to_model(inputs, self.fm.device, self.fm.dtype), targets, argument)
        out = torch.cat([self.method.features(self.fm, fn, take(inputs, slice(lo, lo + self.batch_size)),
                                              targets[lo:lo + self.batch_size])
                         for lo in range(0, len(targets), self.batch_size)])
        check_finite(out, f"the gradients of `{argument}` (check the model outputs and loss)")
        return out

    def warn_if_suspicious(self, data: ExampleData) -> None:
        """Warn once (an `InfluenceWarning` per reason) if the model does not look like a trained
        model for the task, judged on the first 64 examples (see `Task.suspicious`)."""
        inputs, targets = data.batch(range(min(len(data), 64)))
        inputs, targets = to_model(inputs, self.fm.device, self.fm.dtype), targets.to(self.fm.device)
        check_targets(self.fm, self.task, inputs, targets, data.argument)
        with torch.no_grad():
            outputs = self.fm(self.fm.theta, inputs)
        for reason in self.task.suspicious(outputs, targets):
            warnings.warn(reason, InfluenceWarning, stacklevel=4)

    def data(self, data: ExampleData, fn: Callable, desc: str) -> Tensor:
        """Features of `fn` over all of `data`: Tensor[len(data), feature_dim], in memory."""
        return self._pass(data, fn, desc, None)

    def data_and_digest(self, data: ExampleData, fn: Callable, desc: str) -> tuple[Tensor, str]:
        """`data(data, fn, desc)` and a digest of the data's content (`influence.fingerprint`),
        both from one read of `data`."""
        prints: list[np.ndarray] = []
        keep = lambda rows, x, y: prints.append(batch_fingerprints(data, rows, x, y))  # noqa: E731
        out = self._pass(data, fn, desc, keep)
        return out, digest(np.concatenate(prints) if prints else np.zeros((0, 3), np.uint64))

    def _pass(self, data: ExampleData, fn: Callable, desc: str, also: Callable | None) -> Tensor:
        out = self._allocate(len(data), desc)
        with phase(desc, len(data), enabled=self.progress,
                   hint="pass cache_dir= to keep the result on disk and reuse it") as bar:
            for rows, inputs, targets in data.batches(self.batch_size):
                if also is not None:
                    also(rows, inputs, targets)
                out[rows.start:rows.stop] = self.batch(inputs, targets, fn, data.argument)
                bar.update(len(rows))
        return out

    def _allocate(self, n: int, desc: str) -> Tensor:
        dim = self.dim
        try:
            return torch.empty(n, dim, dtype=self.fm.dtype, device=self.fm.device)
        except (RuntimeError, MemoryError) as error:  # torch reports a failed allocation as RuntimeError
            size = n * dim * self.fm.dtype.itemsize / 2**30
            raise InfluenceError(
                f"the {desc} of method {self.method.name!r} need {size:.1f} GiB in memory ({n:,} × {dim:,} "
                f"{str(self.fm.dtype)[6:]}), more than this machine can allocate; pass cache_dir= to keep the index "
                "on disk (memory-mapped), storage_dtype='float16' to halve it, or use method='auto', which keeps "
                "the index small"
            ) from error


class TrainFeatures:
    """φ(∇ℓ(train_i)): the features a store keeps, from a `FeaturePass` and the task's loss."""

    def __init__(self, features: FeaturePass):
        self.features = features

    @property
    def dim(self) -> int:
        return self.features.dim

    def __call__(self, data: ExampleData) -> Tensor:
        """Tensor[len(data), dim], in memory."""
        return self.features.data(data, self.features.task.loss, "train gradients")

    def batch(self, inputs, targets: Tensor) -> Tensor:
        """Tensor[b, dim] for one batch of training examples."""
        return self.features.batch(inputs, targets, self.features.task.loss, "train")
