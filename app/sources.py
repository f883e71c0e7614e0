"""Open an existing influence index with its model factory and data.

    python -m app --index runs/v2-index --factory mypkg.models:make --weights model.safetensors \
                  --train data/train --eval data/eval

The factory (`module:function`, called without arguments) returns either the model (an
`nn.Module`, then the task is `ClassificationTask()`), or a dict with the key "model" and
any of: "task" (the `influence.Task` the index was built with), "transform", "encode",
"class_names", "modality", "image_shape", "text_column", "row_columns", "group_columns",
"name" (see `app.session.Setup`). Weights: a `.safetensors` file, or a `torch.save` state
dict read with `weights_only=True`. Data: a folder written by `datasets.Dataset.save_to_disk`,
or a `.parquet`, `.csv`, `.json` / `.jsonl` file.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

import influence as inf
from influence.data import as_data
from influence.errors import InvalidArgumentError

from app.session import Setup

SETUP_KEYS = {"task", "transform", "encode", "class_names", "modality", "image_shape", "text_column", "row_columns",
              "group_columns", "name"}


def load_factory(spec: str):
    """The callable named by `module:function`."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise InvalidArgumentError(f"--factory must look like module:function, got {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise InvalidArgumentError(f"--factory {spec!r} cannot be loaded: {error}") from error


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a `.safetensors` file or a state dict read with `torch.load(weights_only=True)`
    (never a pickle that could run code) into `model`, strictly."""
    from influence.report.inputs import read_state_dict

    state = read_state_dict(str(path), "--weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise InvalidArgumentError(f"--weights {path} does not fit the model built by --factory: {detail}") from None


def load_table(path: str | Path, argument: str):
    """A `datasets.Dataset` from a `save_to_disk` folder or a parquet / csv / json(l) file."""
    import datasets

    path = Path(path)
    if path.is_dir():
        return datasets.load_from_disk(str(path))
    readers = {".parquet": datasets.Dataset.from_parquet, ".csv": datasets.Dataset.from_csv,
               ".json": datasets.Dataset.from_json, ".jsonl": datasets.Dataset.from_json}
    if not path.exists() or path.suffix not in readers:
        raise InvalidArgumentError(f"--{argument} must be a save_to_disk folder or a {list(readers)} file, got {path}")
    return readers[path.suffix](str(path))


def guess_modality(train, input_column: str, spec: dict) -> str:
    """image when an image shape is known or inputs are 2-D; text when a text column exists; else table."""
    if spec.get("image_shape") or _ndim(train[0][input_column]) >= 2:
        return "image"
    if spec.get("text_column") or "text" in train.column_names:
        return "text"
    return "table"


def _ndim(value: Any) -> int:
    n = 0
    while isinstance(value, (list, tuple)) and value:
        n, value = n + 1, value[0]
    return n


def open_index(folder: str | Path, factory: str, train: str | Path, eval: str | Path, weights: str | Path | None = None,
               modality: str = "auto", input_column: str = "input", label_column: str = "label",
               flags: str | Path | None = None, report: str | Path | None = None) -> Setup:
    """A `Setup` for an index folder written by `Attributor(..., cache_dir=folder).fit()`."""
    folder = Path(folder)
    made = load_factory(factory)()
    spec = dict(made) if isinstance(made, dict) else {"model": made}
    unknown = set(spec) - SETUP_KEYS - {"model"}
    if unknown:
        raise InvalidArgumentError(f"the factory returned unknown keys {sorted(unknown)}; known: {sorted(SETUP_KEYS)}")
    model = spec["model"]
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"the factory must return an nn.Module or a dict with 'model', "
                                   f"got {type(model).__name__}")
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    train_data, eval_data = load_table(train, "train"), load_table(eval, "eval")
    attr = inf.Attributor.load(folder, model, task=spec.get("task"), input_column=input_column,
                               label_column=label_column, transform=spec.get("transform"), progress=False)
    modality = guess_modality(train_data, input_column, spec) if modality == "auto" else modality
    first = train_data[0][input_column]
    image_shape = spec.get("image_shape")
    if modality == "image" and image_shape is None:
        if _ndim(first) >= 2:
            image_shape = (len(first), len(first[0]))
        else:
            side = math.isqrt(len(first))
            if side * side != len(first):
                raise InvalidArgumentError("image inputs are flat and not square; the factory must give 'image_shape'")
            image_shape = (side, side)
    encode = spec.get("encode")
    if encode is None and modality == "image":
        shape = torch.as_tensor(first).shape

        def encode(image):  # the view's [H, W] image, ink-high in [0, 1], in the input's layout
            return torch.as_tensor(image, dtype=torch.float32).reshape(shape)
    metadata = [c for c in train_data.column_names if c not in (input_column, label_column)]
    groups = spec.get("group_columns")
    if groups is None:
        groups = [c for c in metadata if 2 <= len(set(map(str, train_data[c]))) <= 100]
    x, _ = as_data(train_data, "train", input_column, label_column, spec.get("transform")).batch([0])
    with torch.no_grad():
        n_classes = int(model(x.to(next(model.parameters()).dtype) if x.is_floating_point() else x).shape[-1])
    return Setup(name=spec.get("name", folder.name), model=model, attributor=attr, train=train_data, eval=eval_data,
                 modality=modality, class_names=spec.get("class_names") or [str(c) for c in range(n_classes)],
                 flags_path=Path(flags) if flags else folder.parent / f"{folder.name}.flags.json",
                 input_column=input_column, label_column=label_column, transform=spec.get("transform"),
                 encode=encode, image_shape=image_shape,
                 text_column=spec.get("text_column") or ("text" if modality == "text" else None),
                 row_columns=spec.get("row_columns") or (metadata if modality == "table" else []),
                 group_columns=list(groups), report_folder=Path(report) if report else None)
