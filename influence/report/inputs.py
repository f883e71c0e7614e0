"""Reading a user's model and data from files: the one loader of `influence report`, the demos'
report folders and the app (`--factory`, `--weights`, `--train`, `--eval`).

- A factory is `module:function` (importable from the current folder), called without
  arguments. It returns the untrained model (an `nn.Module`), or a dict with "model" and any
  of `FACTORY_KEYS` ("task": the `influence.Task` the model is trained and attributed with,
  "class_names", "transform", and the app's display keys).
- Checkpoints are read only as safetensors or with `torch.load(weights_only=True)`: no
  pickled code runs.
- Tables: a `datasets` folder (`save_to_disk`), or a `.parquet`, `.csv`, `.json` or `.jsonl`
  file, with an input column (a vector per row, or `feature_columns` stacked into one) and
  a label column; every other column is metadata. String labels are mapped to class indices
  with the factory's `class_names` (`encode_labels`).

Every failure raises `InvalidArgumentError` naming the option and the fix.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from influence.errors import InvalidArgumentError
from influence.report.document import FAIL_ON

FACTORY_KEYS = {"task", "transform", "class_names", "encode", "modality", "image_shape", "text_column",
                "row_columns", "group_columns", "name"}
TABLE_SUFFIXES = (".parquet", ".csv", ".json", ".jsonl")


def load_factory(spec: str, option: str):
    """`module:function` -> the function (the current folder is importable)."""
    module_name, _, function = str(spec).partition(":")
    if not module_name or not function:
        raise InvalidArgumentError(f"`{option}` must look like module:function (e.g. mypkg.models:make_model), "
                                   f"got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InvalidArgumentError(f"`{option}`: cannot import module {module_name!r} ({error}); run from the "
                                   "folder that holds it, or add that folder to PYTHONPATH") from None
    if not callable(getattr(module, function, None)):
        raise InvalidArgumentError(f"`{option}`: module {module_name!r} has no function {function!r}")
    return getattr(module, function)


def factory_spec(spec: str, option: str) -> dict:
    """Call the factory; its model and optional keys as a dict with "model" (see module docstring)."""
    import torch

    made = load_factory(spec, option)()
    out = dict(made) if isinstance(made, dict) else {"model": made}
    unknown = sorted(set(out) - FACTORY_KEYS - {"model"})
    if unknown:
        raise InvalidArgumentError(f"`{option}` {spec} returned unknown keys {unknown}; known: "
                                   f"{sorted(FACTORY_KEYS | {'model'})}")
    if not isinstance(out.get("model"), torch.nn.Module):
        raise InvalidArgumentError(f"`{option}` {spec} must return a torch.nn.Module or a dict with 'model', "
                                   f"got {type(out.get('model', made)).__name__}")
    return out


def read_state_dict(path: str | Path, option: str) -> dict:
    """Tensors of a checkpoint: `.safetensors`, or a torch file loaded with weights_only=True
    (a state dict, or a dict holding one under "state_dict")."""
    import torch

    path = str(path)
    if not Path(path).is_file():
        raise InvalidArgumentError(f"`{option}`: no such file {path!r}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 — any unreadable file is the user's input
        raise InvalidArgumentError(f"`{option}`: {path!r} is not a safetensors file or a torch checkpoint that "
                                   f"loads with weights_only=True ({type(error).__name__}: {error})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidArgumentError(f"`{option}`: {path!r} does not hold a state dict (name -> tensor)")
    return state


def load_weights(model, path: str | Path, option: str, factory: str = "the factory"):
    """Load a checkpoint into `model` strictly, in the checkpoint's precision; returns the model."""
    state = read_state_dict(path, option)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())  # keep the checkpoint's precision
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise InvalidArgumentError(f"`{option}` {str(path)!r} does not fit the model built by {factory}: "
                                   f"{detail}") from None
    return model.eval()


def load_model(factory: str, weights: str | Path, factory_option: str, weights_option: str) -> dict:
    """The factory's spec (a dict, see `factory_spec`) with the checkpoint loaded into its "model"."""
    spec = factory_spec(factory, factory_option)
    spec["model"] = load_weights(spec["model"], weights, weights_option, f"`{factory_option}` {factory}")
    return spec


def load_table(path: str | Path, option: str, feature_columns: Sequence[str] | None = None,
               input_column: str = "input"):
    """A `datasets.Dataset` from a `save_to_disk` folder or a `TABLE_SUFFIXES` file.

    With `feature_columns`, those numeric columns are stacked into `input_column` (float32).
    """
    import datasets
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise InvalidArgumentError(f"`{option}`: no such file or folder {str(path)!r}")
    if not p.is_dir() and p.suffix not in TABLE_SUFFIXES:
        raise InvalidArgumentError(f"`{option}`: {str(path)!r} must be a datasets folder (save_to_disk) or a "
                                   f"{'/'.join(TABLE_SUFFIXES)} file")
    readers = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".json": pd.read_json,
               ".jsonl": lambda f: pd.read_json(f, lines=True)}
    try:
        if p.is_dir():
            table = datasets.load_from_disk(str(p))
            if not feature_columns:
                return table
            frame = table.to_pandas()
        else:
            frame = readers[p.suffix](p)
    except Exception as error:  # noqa: BLE001 — any unreadable file is the user's input
        raise InvalidArgumentError(f"`{option}`: cannot read {str(path)!r}: {type(error).__name__}: {error}") from None
    if feature_columns:
        frame = _with_features(frame, list(feature_columns), input_column, option)
    return datasets.Dataset.from_pandas(frame, preserve_index=False)


def _with_features(frame, columns: list[str], input_column: str, option: str):
    import numpy as np

    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidArgumentError(f"`--feature-columns` names {missing}, which {option} does not have; "
                                   f"its columns are {list(frame.columns)}")
    try:
        values = frame[columns].to_numpy(np.float32)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"`--feature-columns` must name numeric columns of {option}") from None
    frame = frame.copy()
    frame[input_column] = list(values)
    return frame


def feature_encoder(columns: Sequence[str]):
    """`encode(row) -> float32 [len(columns)]`: a row's `--feature-columns` stacked as `load_table`
    stacks them (what the app needs to read a new row of a report made with --feature-columns)."""
    import numpy as np

    columns = list(columns)

    def encode(row: dict):
        try:
            return np.array([float(row[c]) for c in columns], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise InvalidArgumentError(f"every feature column must hold a number: "
                                       f"{columns}") from None

    return encode


def encode_labels(tables: dict[str, Any], label_column: str, class_names: Sequence[str] | None = None
                  ) -> tuple[dict[str, Any], list[str] | None]:
    """Map string labels to class indices in every table (`{option: Dataset}`).

    With `class_names` (e.g. from the factory) a label is the index of its name; without,
    the classes are the sorted distinct labels of all tables. Integer labels are kept as they
    are. Returns the tables and the class names (None when the labels were already integers
    and none were given).
    """
    names = None if class_names is None else [str(c) for c in class_names]
    strings = {o: t for o, t in tables.items() if label_column in t.column_names and _holds_strings(t[label_column])}
    if not strings:
        return tables, names
    if names is None:
        names = sorted({str(v) for t in strings.values() for v in t[label_column]})
    position = {name: k for k, name in enumerate(names)}
    out = dict(tables)
    for option, table in strings.items():
        unknown = sorted({str(v) for v in table[label_column]} - set(position))
        if unknown:
            raise InvalidArgumentError(f"`{option}`: label(s) {unknown[:5]} of column {label_column!r} are not class "
                                       f"names {names}; make the factory return 'class_names' with every label")
        codes = [position[str(v)] for v in table[label_column]]
        out[option] = table.remove_columns(label_column).add_column(label_column, codes)
    return out, names


def _holds_strings(values) -> bool:
    return any(isinstance(v, str) for v in list(values[:100]))


def parse_fail_on(values: list[str]) -> dict[str, float]:
    """["share=0.5", "regressions=10,accuracy_drop=0.01"] -> {"share": 0.5, ...}."""
    out = {}
    for item in (part for value in values for part in value.split(",") if part.strip()):
        name, _, number = item.partition("=")
        name = name.strip()
        if name not in FAIL_ON:
            raise InvalidArgumentError(f"`--fail-on` {item!r}: unknown metric {name!r}; known: {sorted(FAIL_ON)}")
        try:
            out[name] = float(number)
        except ValueError:
            raise InvalidArgumentError(f"`--fail-on` {item!r}: expected {name}=NUMBER") from None
    return out
