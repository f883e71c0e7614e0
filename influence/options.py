"""Typed method options: one frozen dataclass per method holds the defaults, the docs (its
docstring) and the validation (`__post_init__`, with the checks below); `asdict`-like
`options_key` is what an index folder stores and compares.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from influence.errors import InvalidArgumentError


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


def parse_options(cls: type, given: dict[str, Any], method: str) -> Any:
    """`cls(**given)`, with unknown names an `InvalidArgumentError` listing the valid ones."""
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise InvalidArgumentError(f"unknown option(s) {unknown} for method {method!r}; "
                                   f"its options are {valid or 'none'}")
    return cls(**given)


def options_key(options: Any) -> dict[str, Any]:
    """The options as a JSON-able dict (tensors by digest), for an index's compatibility key."""
    return {f.name: jsonable(getattr(options, f.name)) for f in fields(options)}


def jsonable(value: Any) -> Any:
    """A JSON-serialisable, comparable description of a value (tensors by a content digest)."""
    if isinstance(value, Tensor):
        digest = hashlib.sha256(str((tuple(value.shape), str(value.dtype))).encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return "tensor:" + digest.hexdigest()[:16]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(value):
        return f"callable:{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return repr(value)


def check_int(value: Any, name: str, minimum: int = 1, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InvalidArgumentError(f"`{name}` must be {what}, got {value!r}")


def check_number(value: Any, name: str, minimum: float = 0.0, positive: bool = False,
                 optional: bool = False) -> None:
    """A finite int/float >= `minimum` (> minimum when `positive`); None allowed when `optional`."""
    if value is None and optional:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (positive and value == minimum):
        bound = f"> {minimum:g}" if positive else f">= {minimum:g}"
        raise InvalidArgumentError(f"`{name}` must be a finite number {bound}{' or None' if optional else ''}, "
                                   f"got {value!r}")


def check_choice(value: Any, name: str, choices: tuple) -> None:
    if value not in choices:
        raise InvalidArgumentError(f"`{name}` must be one of {list(choices)}, got {value!r}")
