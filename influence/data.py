"""Uniform access to training and test data.

`as_data(obj, argument, ...)` returns an `ExampleData` that yields checked batches of
`(inputs, targets)` in a fixed order without loading everything at once. `inputs` is a
tensor, a dict of tensors (the model is called as `model(**inputs)`, e.g. a Hugging Face
batch) or a tuple of tensors (`model(*inputs)`), each with a leading example dimension
(see `influence.batching`); `targets` is a tensor with the same leading dimension.

Accepted forms of `obj`:

- a tuple `(inputs, labels)`: inputs a tensor / array, a dict of them or a tuple of them;
- a dict of tensors (e.g. a tokenizer's output plus labels): `label_column` holds the
  labels; the inputs are `input_column` (one key, or a list of keys) when present, else
  every other key;
- a `datasets.Dataset`: `input_column` names one column or a list of columns (then the
  inputs are a dict); when the default `"input"` is absent, the tokenizer columns present
  (`input_ids`, `attention_mask`, `token_type_ids`) are used. A struct column gives a
  dict. Columns other than the inputs and labels are metadata (e.g. `source`, `day`,
  `client`), available through `ExampleData.column(name)`;
- a map-style torch `Dataset`, whose items are `(input, label)` pairs or dicts holding
  `label_column`, or a `DataLoader` over one (its dataset in index order and its
  `collate_fn`; its batch size and sampler are not used).

`collate_fn` (or a DataLoader's) turns a list of items into a batch, e.g. Hugging Face's
`DataCollatorWithPadding`; it may return `(inputs, labels)` or a dict holding the labels
(`"labels"` is accepted for `label_column="label"`: Hugging Face collators rename it).

Sequences of different lengths (token ids, masks, per-token labels) are padded at the end
to the longest in the whole dataset — with 0 in the inputs and -100 (the ignore index) in
integer labels — so that every batch has the same width and batches can be joined; the
width is found once, by one pass over the data, on the first read. Integer tensors are
read as int64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from influence.batching import describe, is_finite, num_rows, take
from influence.errors import InvalidArgumentError

IGNORE_INDEX = -100  # fill of padded integer labels; losses skip it (as torch and Hugging Face do)
TOKENIZER_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
SCAN_ROWS = 1024  # rows per read when the padded width is looked for

Fetch = Callable[[Sequence[int]], tuple[Any, Tensor]]


class ExampleData:
    """A fixed-order collection of examples, read in batches.

    Args:
        source: the underlying object (kept for metadata look-ups).
        length: number of examples.
        fetch: `fetch(indices) -> (inputs, targets)` for a list of integer indices.
        argument: the user-facing argument name (`"train"`, `"test"`) used in errors.
        metadata_columns: columns of `source` that are metadata (groups such as `source`).
        ragged: whether `fetch` may return sequences of different widths for different
            indices (or a function saying so, asked after the first `fetch`); they are then
            padded to the widest in the dataset (found by one pass over `fetch` on the first read).
    """

    def __init__(self, source: Any, length: int, fetch: Fetch, argument: str, metadata_columns: Sequence[str] = (),
                 ragged: bool | Callable[[], bool] = False):
        if length == 0:
            raise InvalidArgumentError(f"`{argument}` is empty; it needs at least one example")
        self.source = source
        self.argument = argument
        self.metadata_columns = list(metadata_columns)
        self._length = length
        self._fetch = fetch
        self._ragged = ragged
        self._widths: tuple[list, list] | None = None

    def __len__(self) -> int:
        return self._length

    def batch(self, indices: Sequence[int]) -> tuple[Any, Tensor]:
        """Inputs and targets of the given examples, checked for NaN/inf inputs."""
        indices = list(indices)
        inputs, targets = self._fetch(indices)
        if callable(self._ragged):
            self._ragged = bool(self._ragged())
        if self._ragged:
            widths = self._dataset_widths()
            inputs, targets = _pad_tree(inputs, widths[0], 0), _pad_tree(targets, widths[1], IGNORE_INDEX)
        _check_rows(inputs, targets, len(indices), self.argument)
        finite = is_finite(inputs)
        if not finite.all():
            bad = int(torch.nonzero(~finite)[0])
            raise InvalidArgumentError(
                f"`{self.argument}` has NaN or infinite input values (first at example "
                f"{indices[bad]}); clean or impute them before computing influence"
            )
        return inputs, targets

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None
                ) -> Iterator[tuple[range, Any, Tensor]]:
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

    def _dataset_widths(self) -> tuple[list, list]:
        """Per tensor of the inputs and of the targets, the largest shape (without the example
        dimension) over the whole dataset: one pass over `fetch`, done once."""
        if self._widths is None:
            widest = None
            for lo in range(0, len(self), SCAN_ROWS):
                inputs, targets = self._fetch(list(range(lo, min(lo + SCAN_ROWS, len(self)))))
                shapes = [[tuple(t.shape[1:]) for t in tree_flatten(part)[0]] for part in (inputs, targets)]
                if widest is not None and [len(s) for s in shapes] != [len(s) for s in widest]:
                    raise InvalidArgumentError(f"the examples of `{self.argument}` do not all have the same "
                                               f"structure (inputs of examples {lo}.. are {describe(inputs)})")
                widest = shapes if widest is None else [[_largest(a, b, self.argument) for a, b in zip(old, new)]
                                                        for old, new in zip(widest, shapes)]
            self._widths = (widest[0], widest[1])
        return self._widths


# ---------------------------------------------------------------------------- stacking and padding
def _largest(a: tuple, b: tuple, argument: str) -> tuple:
    if len(a) != len(b):
        raise InvalidArgumentError(f"the examples of `{argument}` have tensors of different ranks "
                                   f"(shapes {a} and {b}); they cannot be batched")
    return tuple(max(x, y) for x, y in zip(a, b))


def _pad(t: Tensor, shape: Sequence[int], fill: int) -> Tensor:
    """`t` (Tensor[b, ...]) padded at the end of each trailing dimension to `shape`."""
    if tuple(t.shape[1:]) == tuple(shape):
        return t
    if t.is_floating_point() or t.dtype == torch.bool:
        fill = 0
    out = t.new_full((t.shape[0], *shape), fill)
    out[(slice(None), *(slice(0, n) for n in t.shape[1:]))] = t
    return out


def _pad_tree(tree: Any, shapes: list, fill: int) -> Any:
    values, spec = tree_flatten(tree)
    return tree_unflatten([_pad(t, s, fill) for t, s in zip(values, shapes)], spec)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, bool, np.number, np.bool_))


def _is_leaf(v: Any) -> bool:
    """An example's tensor-like value: a tensor, an array, a number or a (nested) list of numbers.
    A tuple or list of tensors / arrays / dicts is a structure of several inputs instead."""
    if isinstance(v, (Tensor, np.ndarray)) or _is_number(v):
        return True
    if isinstance(v, (list, tuple)):
        return not v or _is_number(v[0]) or (isinstance(v[0], (list, tuple)) and _is_leaf(v[0]))
    return False


def _as_tensor(v: Any) -> Tensor:
    if not isinstance(v, Tensor):
        v = np.asarray(v)
        v = torch.as_tensor(v if v.flags.writeable else v.copy())
    return v.long() if v.dtype in (torch.int8, torch.int16, torch.int32, torch.uint8) else v


def _stack_leaf(values: list, fill: int, argument: str) -> Tensor:
    tensors = [_as_tensor(v) for v in values]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) == 1:
        return torch.stack(tensors)
    if len({len(s) for s in shapes}) != 1:
        raise InvalidArgumentError(f"the examples of `{argument}` have tensors of different ranks "
                                   f"(shapes {sorted(shapes)[:3]}); they cannot be batched")
    widest = tuple(max(s) for s in zip(*shapes))
    return torch.cat([_pad(t.unsqueeze(0), widest, fill) for t in tensors])


def collate(values: list, argument: str, fill: int = 0) -> Any:
    """Batch per-example values (each a tensor-like leaf, a dict or a tuple of them): stacked
    along a new first dimension, sequences of different lengths padded at the end with `fill`."""
    first = values[0]
    if isinstance(first, Mapping):
        keys = list(first)
        if any(not isinstance(v, Mapping) or list(v) != keys for v in values):
            raise InvalidArgumentError(f"the examples of `{argument}` are dicts with different keys")
        return {k: collate([v[k] for v in values], argument, fill) for k in keys}
    if _is_leaf(first):
        return _stack_leaf(values, fill, argument)
    if isinstance(first, (tuple, list)):
        return tuple(collate([v[i] for v in values], argument, fill) for i in range(len(first)))
    if isinstance(first, (str, bytes)):
        names = sorted({str(v) for v in values})[:5]
        raise InvalidArgumentError(
            f"the examples of `{argument}` hold strings (e.g. {names}), which are not numbers: "
            "map string labels to class indices first, e.g. "
            "`dataset.class_encode_column(label_column)` (a datasets.Dataset; its ClassLabel "
            "feature keeps the names) or `[names.index(v) for v in labels]`; tokenise text "
            "inputs (or pass transform=)")
    raise InvalidArgumentError(f"cannot batch the examples of `{argument}`: a {type(first).__name__} is not a "
                               "tensor, an array, a list of numbers, a dict or a tuple of them")


def _is_sequence_like(v: Any) -> bool:
    """Whether an example holds values that may differ in length between examples (token ids,
    masks, per-token labels): Python lists, or 1-d integer tensors and arrays."""
    if isinstance(v, Mapping):
        return any(_is_sequence_like(x) for x in v.values())
    if isinstance(v, (Tensor, np.ndarray)):
        return v.ndim == 1 and not (v.dtype.is_floating_point if isinstance(v, Tensor) else v.dtype.kind == "f")
    if isinstance(v, (list, tuple)):
        return _is_leaf(v) or any(_is_sequence_like(x) for x in v)
    return False


def _check_rows(inputs: Any, targets: Tensor, n: int, argument: str) -> None:
    try:
        rows = num_rows(inputs)
    except ValueError:
        raise InvalidArgumentError(f"the inputs of `{argument}` need one leading example dimension shared by "
                                   f"every tensor; got {describe(inputs)}") from None
    if rows != n or not isinstance(targets, Tensor) or targets.ndim == 0 or targets.shape[0] != n:
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise InvalidArgumentError(f"`{argument}` gave {rows} inputs and labels of shape {shape} for {n} examples; "
                                   "inputs and labels need one row per example")


# ---------------------------------------------------------------------------- inputs and labels
def _as_inputs(x: Any, argument: str) -> Any:
    """A whole-dataset inputs object as a tensor, a dict of tensors or a tuple of tensors."""
    if isinstance(x, Mapping):
        return {str(k): _as_inputs(v, argument) for k, v in x.items()}
    if isinstance(x, (tuple, list)) and x and not _is_leaf(x):
        return tuple(_as_inputs(v, argument) for v in x)
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], Tensor):
        return torch.stack(list(x))
    try:
        return _as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidArgumentError(
            f"the inputs of `{argument}` must be a tensor or array, a dict of them (model(**inputs)) or a tuple of "
            f"them (model(*inputs)); got {type(x).__name__}"
        ) from None


def _split(mapping: Mapping, input_column: str | Sequence[str], label_column: str, argument: str) -> tuple[Any, Any]:
    """`(inputs, labels)` of a dict of per-example or per-batch values: `input_column` (a key or
    a list of keys), or with the default `"input"` absent every key but the labels."""
    keys = list(mapping)
    if label_column in mapping:
        labels = mapping[label_column]
    elif label_column == "label" and "labels" in mapping:  # Hugging Face collators rename "label" to "labels"
        labels, label_column = mapping["labels"], "labels"
    else:
        raise InvalidArgumentError(f"`{argument}` has no labels {label_column!r} (set by label_column); its keys are "
                                   f"{keys}")
    if isinstance(input_column, str) and input_column in mapping:
        return mapping[input_column], labels
    if isinstance(input_column, str) and input_column != "input":
        raise InvalidArgumentError(f"`{argument}` has no input {input_column!r} (set by input_column); its keys are "
                                   f"{keys}")
    wanted = list(input_column) if not isinstance(input_column, str) else [k for k in mapping if k != label_column]
    missing = [k for k in wanted if k not in mapping]
    if missing or not wanted:
        raise InvalidArgumentError(f"`{argument}` has no input {missing or input_column!r} (set by input_column); "
                                   f"its keys are {keys}")
    return {k: mapping[k] for k in wanted}, labels


def _from_tensors(data: tuple, argument: str) -> ExampleData:
    if len(data) != 2:
        raise InvalidArgumentError(
            f"`{argument}` as a tuple must be (inputs, labels); got a tuple of length {len(data)}"
        )
    inputs, targets = _as_inputs(data[0], argument), _as_inputs(data[1], argument)
    if isinstance(inputs, Tensor) and isinstance(targets, Tensor) and inputs.ndim == 1 and inputs.shape[0] != 1 \
            and (targets.ndim == 0 or targets.shape[0] == 1):
        raise InvalidArgumentError(
            f"`{argument}` looks like one example without a batch dimension (inputs of shape "
            f"{tuple(inputs.shape)}, {targets.numel()} label); pass (X[None], y.reshape(1)) for a single example"
        )
    if not isinstance(targets, Tensor) or targets.ndim == 0:
        raise InvalidArgumentError(f"the labels of `{argument}` must be a tensor with a leading example dimension")
    try:
        n = num_rows(inputs)
    except ValueError:
        raise InvalidArgumentError(f"`{argument}` inputs need one leading example dimension shared by every tensor; "
                                   f"got {describe(inputs)}") from None
    if n != targets.shape[0]:
        raise InvalidArgumentError(f"`{argument}` has {n} inputs but {targets.shape[0]} labels; they must match")
    return ExampleData(data, n, lambda idx: (take(inputs, idx), targets[idx]), argument)


def _from_dict(data: Mapping, input_column: str | Sequence[str], label_column: str, argument: str) -> ExampleData:
    return _from_tensors(_split(data, input_column, label_column, argument), argument)


def _from_items(source: Any, length: int, item: Callable[[int], Any], input_column, label_column: str,
                collate_fn: Callable | None, argument: str, metadata_columns: Sequence[str] = ()) -> ExampleData:
    """Examples read one at a time by `item(i)`: `(input, label)` pairs or dicts holding the label."""

    def split(value: Any) -> tuple[Any, Any]:
        if isinstance(value, Mapping):
            return _split(value, input_column, label_column, argument)
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return value[0], value[1]
        raise InvalidArgumentError(f"items of `{argument}` must be (input, label) pairs or dicts holding "
                                   f"{label_column!r}; got {type(value).__name__}")

    first: list = []  # the first item read, to tell whether examples may differ in length

    def fetch(idx: Sequence[int]) -> tuple[Any, Tensor]:
        items = [item(i) for i in idx]
        first[:] = first or items[:1]
        if collate_fn is not None:
            batch = collate_fn(items)
            inputs, labels = split(dict(batch) if isinstance(batch, Mapping) else batch)
            return _as_inputs(inputs, argument), _as_tensor(labels)
        pairs = [split(v) for v in items]
        return collate([x for x, _ in pairs], argument), collate([y for _, y in pairs], argument, IGNORE_INDEX)

    ragged = lambda: collate_fn is not None or _is_sequence_like(first[0])  # noqa: E731 — asked after a read
    return ExampleData(source, length, fetch, argument, metadata_columns, ragged=ragged)


def _from_torch_dataset(data: torch.utils.data.Dataset, input_column, label_column: str,
                        collate_fn: Callable | None, argument: str) -> ExampleData:
    try:
        length = len(data)
    except TypeError:
        raise InvalidArgumentError(f"`{argument}` must have a length (an iterable dataset is not supported)") from None
    return _from_items(data, length, data.__getitem__, input_column, label_column, collate_fn, argument)


def _from_loader(loader: torch.utils.data.DataLoader, input_column, label_column: str, collate_fn: Callable | None,
                 argument: str) -> ExampleData:
    if isinstance(loader.dataset, torch.utils.data.IterableDataset):
        raise InvalidArgumentError(f"`{argument}` is a DataLoader over an iterable dataset; influence needs "
                                   "examples it can read by index (a map-style Dataset)")
    own = loader.collate_fn
    if collate_fn is None and own is not torch.utils.data.default_collate:
        collate_fn = own  # a padding collator, for instance; torch's default cannot pad, ours can
    return _from_torch_dataset(loader.dataset, input_column, label_column, collate_fn, argument)


def _hf_input_columns(data: Any, input_column: str | Sequence[str], argument: str) -> list[str] | str:
    names = data.column_names
    if isinstance(input_column, str):
        if input_column in names:
            return input_column
        found = [c for c in TOKENIZER_COLUMNS if c in names]
        if input_column == "input" and found:
            return found
        raise InvalidArgumentError(f"`{argument}` has no column {input_column!r} (set by input_column); its columns "
                                   f"are {names}")
    columns = list(input_column)
    missing = [c for c in columns if c not in names]
    if missing or not columns:
        raise InvalidArgumentError(f"`{argument}` has no column(s) {missing or columns} (set by input_column); its "
                                   f"columns are {names}")
    return columns


def _from_hf(data: Any, input_column: str | Sequence[str], label_column: str, transform: Callable | None,
             collate_fn: Callable | None, argument: str) -> ExampleData:
    inputs_at = _hf_input_columns(data, input_column, argument)
    names = data.column_names
    if label_column == "label" and label_column not in names and "labels" in names:
        label_column = "labels"  # the Hugging Face name (tokenised LM data, Trainer datasets)
    if label_column not in data.column_names:
        raise InvalidArgumentError(
            f"`{argument}` has no column {label_column!r} (set by label_column); its columns are {data.column_names}"
        )
    columns = [inputs_at] if isinstance(inputs_at, str) else inputs_at
    if collate_fn is not None:
        view = data.select_columns([*columns, label_column])
        metadata = [c for c in data.column_names if c not in (*columns, label_column)]
        return _from_items(data, len(data), lambda i: view[int(i)], input_column, label_column, collate_fn, argument,
                           metadata)
    view = data.with_format("numpy", columns=[*columns, label_column]) if transform is None else data

    def fetch(idx: Sequence[int]) -> tuple[Any, Tensor]:
        rows = view[idx]
        if transform is not None:
            raw = rows[inputs_at] if isinstance(inputs_at, str) else [dict(zip(columns, v))
                                                                     for v in zip(*(rows[c] for c in columns))]
            inputs = collate([transform(x) for x in raw], argument)
        elif isinstance(inputs_at, str):
            inputs = collate(list(rows[inputs_at]), argument)
        else:
            inputs = {c: collate(list(rows[c]), argument) for c in columns}
        return inputs, collate(list(rows[label_column]), argument, IGNORE_INDEX)

    ragged = any(_hf_may_be_ragged(data.features[c]) for c in [*columns, label_column])
    metadata = [c for c in data.column_names if c not in (*columns, label_column)]
    return ExampleData(data, len(data), fetch, argument, metadata, ragged=ragged)


def _hf_may_be_ragged(feature: Any) -> bool:
    """Whether a `datasets` feature may hold sequences of different lengths (a list without a
    fixed length, or a struct with one)."""
    if isinstance(feature, dict):
        return any(_hf_may_be_ragged(f) for f in feature.values())
    length = getattr(feature, "length", None)
    return length is not None and length < 0


def as_data(data: Any, argument: str, input_column: str | Sequence[str] = "input", label_column: str = "label",
            transform: Callable | None = None, collate_fn: Callable | None = None) -> ExampleData:
    """Wrap `data` as an `ExampleData` (forms accepted: see the module docstring).

    Args:
        data: the examples.
        argument: the user-facing name of `data` (`"train"`, `"test"`), used in errors.
        input_column: the input column (or dict key), or a list of them (inputs then form a
            dict, the model is called as `model(**inputs)`).
        label_column: the labels' column or dict key.
        transform: maps one row's input to a tensor (or a dict / tuple of tensors)
            (`datasets.Dataset` only).
        collate_fn: turns a list of items into a batch (datasets and torch Datasets).
    Raises:
        InvalidArgumentError: naming `argument`, for a form or a value that is not supported.
    """
    if isinstance(data, ExampleData):
        return data
    if isinstance(data, tuple):
        return _from_tensors(data, argument)
    if hasattr(data, "column_names") and hasattr(data, "with_format"):
        return _from_hf(data, input_column, label_column, transform, collate_fn, argument)
    if isinstance(data, Mapping):
        return _from_dict(data, input_column, label_column, argument)
    if isinstance(data, torch.utils.data.DataLoader):
        return _from_loader(data, input_column, label_column, collate_fn, argument)
    if isinstance(data, torch.utils.data.Dataset):
        return _from_torch_dataset(data, input_column, label_column, collate_fn, argument)
    hint = (" (a list of examples: wrap it as a torch Dataset, or stack it into tensors)"
            if isinstance(data, list) else "")
    raise InvalidArgumentError(
        f"`{argument}` must be a datasets.Dataset, a torch Dataset or DataLoader, a dict of tensors, or a tuple "
        f"(inputs, labels); got {type(data).__name__}{hint}"
    )
