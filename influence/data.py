"""Uniform access to training and test data.

`as_data(obj, ...)` accepts a `datasets.Dataset`, a torch `Dataset` (items `(input, label)`),
or a tuple of tensors `(X, y)`, and returns an `ExampleData` that yields checked batches of
`(inputs, targets)` in a fixed order without loading everything at once. Columns of a
`datasets.Dataset` other than the input and label columns are metadata (e.g. `source`,
`day`, `client`) and are available through `ExampleData.column(name)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from influence.batching import is_finite
from influence.errors import InvalidArgumentError


class ExampleData:
    """A fixed-order collection of examples, read in batches.

    Args:
        source: the underlying object (kept for metadata look-ups).
        length: number of examples.
        fetch: `fetch(indices) -> (inputs, targets)` for a list of integer indices.
        argument: the user-facing argument name (`"train"`, `"test"`) used in errors.
        metadata_columns: columns of `source` that are metadata (groups such as `source`).
    """

    def __init__(self, source: Any, length: int, fetch: Callable[[Sequence[int]], tuple[Tensor, Tensor]],
                 argument: str, metadata_columns: Sequence[str] = ()):
        if length == 0:
            raise InvalidArgumentError(f"`{argument}` is empty; it needs at least one example")
        self.source = source
        self.argument = argument
        self.metadata_columns = list(metadata_columns)
        self._length = length
        self._fetch = fetch

    def __len__(self) -> int:
        return self._length

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Inputs and targets of the given examples, checked for NaN/inf inputs."""
        inputs, targets = self._fetch(list(indices))
        finite = is_finite(inputs)
        if not finite.all():
            bad = int(torch.nonzero(~finite)[0])
            raise InvalidArgumentError(
                f"`{self.argument}` has NaN or infinite input values (first at example "
                f"{indices[bad]}); clean or impute them before computing influence"
            )
        return inputs, targets

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None
                ) -> Iterator[tuple[range, Tensor, Tensor]]:
        """Yield `(index_range, inputs, targets)` over examples `start..stop` in order."""
        stop = len(self) if stop is None else stop
        for lo in range(start, stop, batch_size):
            rows = range(lo, min(lo + batch_size, stop))
            inputs, targets = self.batch(rows)
            yield rows, inputs, targets

    def subset(self, rows: Sequence[int]) -> ExampleData:
        """The examples at `rows`, in that order (metadata look-ups still go to the source)."""
        rows = list(rows)
        return ExampleData(self.source, len(rows), lambda ids: self.batch([rows[i] for i in ids]), self.argument)

    def sample(self, size: int | None, seed: int) -> ExampleData:
        """A fixed random subset of `size` examples (in data order); all of them for None."""
        if size is None or size >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=generator)[:size].sort().values.tolist())

    def metadata(self, rows: Sequence[int]) -> dict[str, list]:
        """{column: values at `rows`} for the metadata columns (empty without any)."""
        if not self.metadata_columns:
            return {}
        return self.source.select_columns(self.metadata_columns)[list(rows)]

    def column(self, name: str) -> list:
        """Values of a metadata column, one per example (only for `datasets.Dataset`)."""
        names = getattr(self.source, "column_names", None)
        if names is None:
            raise InvalidArgumentError(
                f"`groups` names the column {name!r}, but `{self.argument}` is not a datasets.Dataset "
                f"with columns; pass a sequence of {len(self)} group labels instead"
            )
        if name not in names:
            raise InvalidArgumentError(
                f"`groups` names the column {name!r}, which `{self.argument}` does not have; "
                f"its columns are {names}"
            )
        return list(self.source[name])


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], Tensor):
        return torch.stack(list(value))
    return torch.as_tensor(np.asarray(value))


def _from_tensors(data: tuple, argument: str) -> ExampleData:
    if len(data) != 2:
        raise InvalidArgumentError(
            f"`{argument}` as a tuple must be (inputs, labels); got a tuple of length {len(data)}"
        )
    inputs, targets = (_as_tensor(x) for x in data)
    if inputs.ndim == 1 and (targets.ndim == 0 or targets.shape[0] == 1) and inputs.shape[0] != 1:
        raise InvalidArgumentError(
            f"`{argument}` looks like one example without a batch dimension (inputs of shape "
            f"{tuple(inputs.shape)}, {targets.numel()} label); pass (X[None], y.reshape(1)) for a single example"
        )
    if inputs.ndim == 0 or targets.ndim == 0:
        raise InvalidArgumentError(f"`{argument}` inputs and labels need a leading example dimension")
    if inputs.shape[0] != targets.shape[0]:
        raise InvalidArgumentError(
            f"`{argument}` has {inputs.shape[0]} inputs but {targets.shape[0]} labels; they must match"
        )
    return ExampleData(data, inputs.shape[0], lambda idx: (inputs[idx], targets[idx]), argument)


def _from_hf(data: Any, input_column: str, label_column: str, transform: Callable | None,
             argument: str) -> ExampleData:
    for role, column in (("input_column", input_column), ("label_column", label_column)):
        if column not in data.column_names:
            raise InvalidArgumentError(
                f"`{argument}` has no column {column!r} (set by {role}); its columns are {data.column_names}"
            )
    view = data.with_format("numpy", columns=[input_column, label_column]) if transform is None else data

    def fetch(idx: Sequence[int]) -> tuple[Tensor, Tensor]:
        rows = view[idx]
        raw, labels = rows[input_column], rows[label_column]
        if transform is not None:
            inputs = torch.stack([_as_tensor(transform(x)) for x in raw])
        else:
            inputs = _as_tensor(raw)
        return inputs, _as_tensor(labels)

    metadata = [c for c in data.column_names if c not in (input_column, label_column)]
    return ExampleData(data, len(data), fetch, argument, metadata)


def _from_torch_dataset(data: torch.utils.data.Dataset, argument: str) -> ExampleData:
    try:
        length = len(data)
    except TypeError:
        raise InvalidArgumentError(f"`{argument}` must have a length (an iterable dataset is not supported)")

    def fetch(idx: Sequence[int]) -> tuple[Tensor, Tensor]:
        items = [data[i] for i in idx]
        if not all(isinstance(item, (tuple, list)) and len(item) == 2 for item in items):
            raise InvalidArgumentError(f"items of `{argument}` must be (input, label) pairs")
        return _as_tensor([_as_tensor(x) for x, _ in items]), _as_tensor([_as_tensor(y) for _, y in items])

    return ExampleData(data, length, fetch, argument)


def as_data(data: Any, argument: str, input_column: str = "input", label_column: str = "label",
            transform: Callable | None = None) -> ExampleData:
    """Wrap `data` as an `ExampleData`; raises `InvalidArgumentError` naming `argument`."""
    if isinstance(data, ExampleData):
        return data
    if isinstance(data, tuple):
        return _from_tensors(data, argument)
    if hasattr(data, "column_names") and hasattr(data, "with_format"):
        return _from_hf(data, input_column, label_column, transform, argument)
    if isinstance(data, torch.utils.data.Dataset):
        return _from_torch_dataset(data, argument)
    raise InvalidArgumentError(
        f"`{argument}` must be a datasets.Dataset, a torch Dataset of (input, label) pairs, or a "
        f"tuple of tensors (X, y); got {type(data).__name__}"
    )
