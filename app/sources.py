"""Open an existing influence index, or a report folder, as a `Setup`.

    influence app --report DIR              # a folder written by `influence report` / `influence demo`
    influence app --index runs/v2-index --factory mypkg.models:make --weights model.safetensors \
                  --train data/train --eval data/eval [--report DIR]

The factory (`module:function`, called without arguments) returns the model, or a dict with
"model" and any of `influence.report.inputs.FACTORY_KEYS` ("task": the `influence.Task` the
index was built with; "class_names", "transform", "encode", "modality", "image_shape",
"text_column", "row_columns", "group_columns", "name": see `app.setup.Setup`). Weights,
tables and labels are read by `influence.report.inputs` (the one loader of the CLI too).
A report folder added to another model or eval set is refused, naming what differs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

import influence as inf
from influence_app.setup import Setup
from influence.batching import to_model
from influence.data import as_data
from influence.errors import IndexFolderError, InvalidArgumentError
from influence.report import inputs
from influence.report.bundle import check_fingerprints, open_bundle, read_report
from influence.report.fingerprint import data_fingerprint, model_fingerprint
from influence.store import stored_manifest


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """`--weights` into `model` (safetensors, or a state dict read with weights_only=True), strictly."""
    return inputs.load_weights(model, path, "--weights", "the model built by --factory")


def open_index(folder: str | Path, factory: str, train: str | Path, eval: str | Path, weights: str | Path | None = None,
               modality: str = "auto", input_column: str = "input", label_column: str = "label",
               flags: str | Path | None = None, report: str | Path | None = None) -> Setup:
    """A `Setup` for an index folder written by `Attributor(..., cache_dir=folder).fit()`."""
    folder = Path(folder)
    spec = inputs.factory_spec(factory, "--factory")
    if weights is not None:
        spec["model"] = load_weights(spec["model"], weights)
    tables = {"--train": inputs.load_table(train, "--train", input_column=input_column),
              "--eval": inputs.load_table(eval, "--eval", input_column=input_column)}
    tables, class_names = inputs.encode_labels(tables, label_column, spec.get("class_names"))
    task = spec.get("task") or inf.ClassificationTask()
    _check_index_task(folder, task, factory)
    read = dict(input_column=input_column, label_column=label_column, transform=spec.get("transform"))
    try:
        attr = inf.Attributor.load(folder, spec["model"], task=task, train=tables["--train"], progress=False, **read)
    except IndexFolderError as error:
        if "model_fingerprint" in str(error):
            raise InvalidArgumentError(f"--index {folder} was built for other weights than the model opened here: "
                                       "pass the --weights the index was fitted with (or fit a new index)") from None
        raise
    setup = build_setup(spec, attr, tables["--train"], tables["--eval"], class_names, read, modality,
                        name=folder.name, flags=Path(flags) if flags else folder.parent / f"{folder.name}.flags.json")
    return attach_report(setup, report) if report else setup


def open_report(folder: str | Path, flags: str | Path | None = None, modality: str = "auto") -> Setup:
    """A `Setup` for a report folder written by `influence report` or `influence demo`: its new
    model, index, training and eval data, and the report (see `influence.report.bundle`)."""
    opened = open_bundle(folder)
    read = dict(input_column=opened.bundle["input_column"], label_column=opened.bundle["label_column"],
                transform=opened.spec.get("transform"))
    groups = [c for c in opened.bundle["group_by"] if c in opened.train.column_names]
    display = {k: v for k, v in opened.bundle.get("display", {}).items() if k in ("image_shape", "text_column")}
    features = opened.bundle.get("feature_columns")
    if features:  # a new row is read as the report read its tables: those columns stacked
        display.update(encode=inputs.feature_encoder(features), row_columns=list(features))
    spec = {"group_columns": groups, **display, **opened.spec}  # the report's, unless the factory says otherwise
    if modality == "auto" and opened.bundle.get("display", {}).get("modality"):
        modality = opened.bundle["display"]["modality"]
    setup = build_setup(spec, opened.attributor, opened.train, opened.eval, opened.class_names, read, modality,
                        name=f"regression report {Path(folder).name}",
                        flags=Path(flags) if flags else Path(folder) / "flags.json")
    setup.report_folder, setup.report = Path(folder), opened.report
    return setup


def attach_report(setup: Setup, folder: str | Path) -> Setup:
    """Add a report folder to an opened setup, refusing it when the report was computed on
    another new model or another eval set (by fingerprint)."""
    from influence.report.schema import validate

    doc = read_report(folder)
    validate(doc)
    read = dict(input_column=setup.input_column, label_column=setup.label_column, transform=setup.transform)
    check_fingerprints(doc, {"new_model": model_fingerprint(setup.model),
                             "eval": data_fingerprint(as_data(setup.eval, "eval", **read))}, f"--report {folder}")
    setup.report_folder, setup.report = Path(folder), doc
    return setup


def _check_index_task(folder: Path, task: inf.Task, factory: str) -> None:
    """Name the real fix when the factory's task is not the one the index was built with."""
    try:
        key = stored_manifest(folder)["key"]  # the library's reader: checksum and shape checked
    except (IndexFolderError, InvalidArgumentError):
        return  # no usable manifest: Attributor.load says what is wrong with the folder
    given = {"task": f"{type(task).__module__}.{type(task).__qualname__}", "weight_decay": task.weight_decay}
    differ = [k for k, v in given.items() if k in key and key[k] != v]
    if differ:
        stored = f"{key.get('task', '?').rsplit('.', 1)[-1]}(weight_decay={key.get('weight_decay')})"
        raise InvalidArgumentError(
            f"--index {folder} was built with the task {stored}, but --factory {factory} gives "
            f"{type(task).__name__}(weight_decay={task.weight_decay}); make the factory return "
            f"{{'model': ..., 'task': {stored}}} (the task the index was fitted with)")


def build_setup(spec: dict, attr, train, eval, class_names, read: dict, modality: str, name: str,
                flags: Path) -> Setup:
    """A `Setup` from a factory spec, a fitted Attributor and the data (modality guessed)."""
    input_column = read["input_column"]
    modality = guess_modality(train, input_column, spec) if modality == "auto" else modality
    first = train[0][input_column]
    image_shape = spec.get("image_shape") or (_image_shape(first) if modality == "image" else None)
    image_shape = None if image_shape is None else tuple(int(d) for d in image_shape)
    encode = spec.get("encode")
    if encode is None and modality == "image":
        shape = torch.as_tensor(first).shape

        def encode(image):  # the view's [H, W] image, ink-high in [0, 1], in the input's layout
            return torch.as_tensor(image, dtype=torch.float32).reshape(shape)
    metadata = [c for c in train.column_names if c not in (input_column, read["label_column"])]
    groups = spec.get("group_columns")
    if groups is None:
        groups = [c for c in metadata if 2 <= len(set(map(str, train[c]))) <= 100]
    n_classes = _n_classes(spec["model"], train, read)
    return Setup(name=spec.get("name", name), model=spec["model"], attributor=attr, train=train, eval=eval,
                 modality=modality, class_names=list(class_names or [str(c) for c in range(n_classes)]),
                 flags_path=flags, input_column=input_column, label_column=read["label_column"],
                 transform=read["transform"], encode=encode, image_shape=image_shape,
                 text_column=spec.get("text_column") or ("text" if modality == "text" else None),
                 row_columns=spec.get("row_columns") or ([c for c in metadata if c in eval.column_names]
                                                         if modality == "table" else []),
                 group_columns=list(groups))


def guess_modality(train, input_column: str, spec: dict) -> str:
    """image when an image shape is known or inputs are 2-D; text when a text column exists; else table."""
    if spec.get("image_shape") or _ndim(train[0][input_column]) >= 2:
        return "image"
    if spec.get("text_column") or "text" in train.column_names:
        return "text"
    return "table"


def _image_shape(first: Any) -> tuple[int, int]:
    if _ndim(first) >= 2:
        return len(first), len(first[0])
    side = math.isqrt(len(first))
    if side * side != len(first):
        raise InvalidArgumentError("image inputs are flat and not square; the factory must give 'image_shape'")
    return side, side


def _ndim(value: Any) -> int:
    n = 0
    while isinstance(value, (list, tuple)) and value:
        n, value = n + 1, value[0]
    return n


def _n_classes(model: torch.nn.Module, train, read: dict) -> int:
    x, _ = as_data(train, "train", **read).batch([0])
    param = next(model.parameters())
    with torch.no_grad():
        return int(model(to_model(x, param.device, param.dtype)).shape[-1])
