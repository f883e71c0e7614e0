"""Reading the `influence report` command's inputs: model factories, checkpoints, tables.

Checkpoints are read only as safetensors or with `torch.load(weights_only=True)` (no
pickled code runs). Every failure raises `InvalidArgumentError` naming the option.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from influence.errors import InvalidArgumentError
from influence.report.document import FAIL_ON


def load_factory(spec: str, option: str):
    """`module:function` -> the function (the current folder is importable)."""
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise InvalidArgumentError(f"`{option}` must look like module:function (e.g. mypkg.models:make_model), "
                                   f"got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InvalidArgumentError(f"`{option}`: cannot import module {module_name!r}: {error}") from None
    if not callable(getattr(module, function, None)):
        raise InvalidArgumentError(f"`{option}`: module {module_name!r} has no function {function!r}")
    return getattr(module, function)


def read_state_dict(path: str, option: str) -> dict:
    """Tensors of a checkpoint: `.safetensors`, or a torch file loaded with weights_only=True
    (a state dict, or a dict holding one under "state_dict")."""
    import torch

    if not Path(path).is_file():
        raise InvalidArgumentError(f"`{option}`: no such file {path!r}")
    try:
        if str(path).endswith(".safetensors"):
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


def load_model(factory: str, weights: str, factory_option: str, weights_option: str):
    """Build the model with the factory and load the checkpoint into it (strictly)."""
    import torch

    model = load_factory(factory, factory_option)()
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(f"`{factory_option}` {factory} returned {type(model).__name__}, "
                                   "not a torch.nn.Module")
    state = read_state_dict(weights, weights_option)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())  # keep the checkpoint's precision
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        raise InvalidArgumentError(f"`{weights_option}` {weights!r} does not fit the model built by "
                                   f"`{factory_option}` {factory}: {detail}") from None
    return model.eval()


def load_table(path: str, option: str, feature_columns: list[str] | None = None, input_column: str = "input"):
    """A `.parquet` / `.csv` file or a `datasets` folder as a `datasets.Dataset`.

    With `feature_columns`, those numeric columns are stacked into `input_column` (float32).
    """
    import datasets
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise InvalidArgumentError(f"`{option}`: no such file or folder {path!r}")
    try:
        if p.is_dir():
            return _with_features(datasets.load_from_disk(str(p)).to_pandas(), feature_columns, input_column,
                                  option) if feature_columns else datasets.load_from_disk(str(p))
        if p.suffix == ".parquet":
            frame = pd.read_parquet(p)
        elif p.suffix == ".csv":
            frame = pd.read_csv(p)
        else:
            raise InvalidArgumentError(f"`{option}`: {path!r} must be a .parquet or .csv file or a datasets folder")
    except InvalidArgumentError:
        raise
    except Exception as error:  # noqa: BLE001
        raise InvalidArgumentError(f"`{option}`: cannot read {path!r}: {type(error).__name__}: {error}") from None
    if feature_columns:
        frame = _with_features(frame, feature_columns, input_column, option)
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
