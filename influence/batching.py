"""Model inputs as pytrees: one tensor, a dict of tensors (`model(**inputs)`, e.g. a Hugging
Face batch) or a tuple/list of tensors (`model(*inputs)`), each with a leading example
dimension. Every part of the package that slices, joins or moves inputs goes through these
helpers, so a new input form needs no change elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

Inputs = Any  # Tensor | dict[str, Tensor] | tuple[Tensor, ...] | list[Tensor]


def leaves(inputs: Inputs) -> list[Tensor]:
    """The tensors of `inputs`, in a fixed order."""
    return [t for t in tree_flatten(inputs)[0] if isinstance(t, Tensor)]


def num_rows(inputs: Inputs) -> int:
    """Number of examples (the common leading dimension of every tensor)."""
    sizes = {t.shape[0] if t.ndim else None for t in leaves(inputs)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"inputs need one leading example dimension shared by every tensor; got {describe(inputs)}")
    return sizes.pop()


def take(inputs: Inputs, index: slice | Sequence[int] | Tensor) -> Inputs:
    """The examples at `index` (a slice, a list of positions or a LongTensor) of every tensor."""
    return tree_map(lambda t: t[index] if isinstance(t, Tensor) else t, inputs)


def concat(parts: Sequence[Inputs]) -> Inputs:
    """Join batches of the same structure along the example dimension."""
    flat = [tree_flatten(p) for p in parts]
    joined = [torch.cat(column) if isinstance(column[0], Tensor) else column[0]
              for column in zip(*(values for values, _ in flat))]
    return tree_unflatten(joined, flat[0][1])


def unsqueeze(inputs: Inputs) -> Inputs:
    """One example (no leading dimension) -> a batch of one."""
    return tree_map(lambda t: t.unsqueeze(0) if isinstance(t, Tensor) else t, inputs)


def to_model(inputs: Inputs, device: torch.device, dtype: torch.dtype) -> Inputs:
    """Tensors to `device`; floating-point tensors to `dtype` (integer ids and masks keep theirs)."""
    def move(t):
        if not isinstance(t, Tensor):
            return t
        return t.to(device, dtype) if t.is_floating_point() else t.to(device)
    return tree_map(move, inputs)


def is_finite(inputs: Inputs) -> Tensor:
    """BoolTensor[n]: whether every floating-point value of each example is finite."""
    ok = None
    for t in leaves(inputs):
        if t.is_floating_point():
            finite = torch.isfinite(t)
            row = finite.all(dim=tuple(range(1, t.ndim))) if t.ndim > 1 else finite
            ok = row if ok is None else ok & row
    return ok if ok is not None else torch.ones(num_rows(inputs), dtype=torch.bool)


def describe(inputs: Inputs) -> str:
    """Shapes and dtypes, for error messages: `Tensor[8, 64] float32` or `{input_ids: ...}`."""
    def one(t):
        return f"Tensor{list(t.shape)} {str(t.dtype).removeprefix('torch.')}" if isinstance(t, Tensor) \
            else type(t).__name__
    if isinstance(inputs, dict):
        return "{" + ", ".join(f"{k}: {one(v)}" for k, v in inputs.items()) + "}"
    if isinstance(inputs, (tuple, list)):
        return "(" + ", ".join(one(v) for v in inputs) + ")"
    return one(inputs)


def to_state(inputs: Inputs, name: str) -> dict[str, Tensor]:
    """Flat `{name: tensor}` (or `{name.key: tensor}` per part) for a safetensors file."""
    if isinstance(inputs, Tensor):
        return {name: inputs}
    items = inputs.items() if isinstance(inputs, dict) else enumerate(inputs)
    return {f"{name}.{key}": t for key, t in items}


def from_state(state: dict[str, Tensor], name: str) -> Inputs:
    """Inverse of `to_state`: a tensor, a dict, or a tuple (parts named 0, 1, ...)."""
    if name in state:
        return state[name]
    parts = {k[len(name) + 1:]: t for k, t in state.items() if k.startswith(name + ".")}
    if parts and all(k.isdigit() for k in parts):
        return tuple(parts[str(i)] for i in range(len(parts)))
    return parts
