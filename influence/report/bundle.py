"""A report folder the app can open on its own: the report plus everything it was computed on.

    DIR/report.json, report.md, report.html    the report (`Report.save`)
    DIR/index/                                 the influence index of the new model (Attributor cache_dir)
    DIR/model/old.safetensors, new.safetensors the two models' weights
    DIR/data/train.parquet, eval.parquet       the new model's training data and the eval data
    DIR/bundle.json                            how to rebuild them: factory, task, columns, class names

`save_bundle` writes the model and data files and bundle.json (atomically); `open_bundle`
reads them back, reopens the index with `Attributor.load` and refuses a model, index or eval
set whose fingerprint differs from the one recorded in report.json, naming what differs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from influence.data import as_data
from influence.errors import IndexFolderError, InvalidArgumentError
from influence.report.fingerprint import data_fingerprint, differences, model_fingerprint
from influence.storage import atomic_write, write_json
from influence.task import ClassificationTask, RegressionTask, Task

BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 1
TASKS = {"ClassificationTask": ClassificationTask, "RegressionTask": RegressionTask}


def task_spec(task: Task) -> dict:
    """A JSON description of a built-in task (class, weight decay, attributed parameters)."""
    name = type(task).__name__
    if name not in TASKS:
        return {"class": None, "weight_decay": task.weight_decay, "parameters": task.parameters}
    return {"class": name, "weight_decay": task.weight_decay, "parameters": task.parameters}


def save_bundle(folder: str | Path, *, old_model: nn.Module, new_model: nn.Module, train: Any, eval: Any,
                factory: str, task: Task, group_by: list[str], new_factory: str | None = None,
                input_column: str = "input", label_column: str = "label", class_names: list[str] | None = None,
                feature_columns: list[str] | None = None, retrain: str | None = None,
                display: dict | None = None) -> Path:
    """Write the models, the data (`datasets.Dataset`s) and bundle.json into `folder`.

    The index is expected in `folder/index` (pass `cache_dir=folder/"index"` to the report).
    `factory` (and `new_factory`) must stay importable where the app runs; a task other than
    the built-in ones must come from the factory (a dict with "task"). `display`: how the app
    shows an example when the factory does not say (e.g. {"modality": "image", "image_shape":
    [8, 8]}).
    """
    import datasets
    from safetensors.torch import save

    datasets.disable_progress_bars()
    folder = Path(folder)
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name, model in (("old", old_model), ("new", new_model)):
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(folder / "model" / f"{name}.safetensors", lambda f, s=state: f.write(save(s)))
    for name, table in (("train", train), ("eval", eval)):
        if not hasattr(table, "to_parquet"):
            raise InvalidArgumentError(f"`{name}` must be a datasets.Dataset to be saved beside the report")
        tmp = folder / "data" / f".{name}.parquet.tmp"
        table.to_parquet(str(tmp))
        os.replace(tmp, folder / "data" / f"{name}.parquet")
    doc = {"format_version": FORMAT_VERSION, "factory": factory, "new_factory": new_factory or factory,
           "task": task_spec(task), "input_column": input_column, "label_column": label_column,
           "class_names": class_names, "group_by": list(group_by), "feature_columns": feature_columns,
           "retrain": retrain, "display": dict(display or {}), "index": "index",
           "weights": {"old": "model/old.safetensors", "new": "model/new.safetensors"},
           "data": {"train": "data/train.parquet", "eval": "data/eval.parquet"}}
    write_json(folder / BUNDLE_FILE, doc)
    return folder / BUNDLE_FILE


def read_bundle(folder: str | Path) -> dict:
    """bundle.json of a report folder, checked; errors say how to make one."""
    path = Path(folder) / BUNDLE_FILE
    if not path.is_file():
        raise InvalidArgumentError(f"`--report` {folder} has no {BUNDLE_FILE}: it was not written by `influence "
                                   "report` or `influence demo`; open the model with --index/--factory/--weights/"
                                   "--train/--eval and add --report for the Regression tab")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(f"`--report` {path} is not valid JSON ({error})") from None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise InvalidArgumentError(f"`--report` {path} has format version "
                                   f"{doc.get('format_version') if isinstance(doc, dict) else None}, expected "
                                   f"{FORMAT_VERSION}; write the report again with this version")
    return doc


@dataclass
class OpenedReport:
    """A report folder read back: the new model, its index, the data and what to show."""

    folder: Path
    report: dict          # report.json
    bundle: dict          # bundle.json
    spec: dict            # the factory's spec, "model" = the new model with its weights
    attributor: Any       # influence.Attributor reopened from folder/index
    train: Any            # datasets.Dataset
    eval: Any
    task: Task
    class_names: list[str] | None


def open_bundle(folder: str | Path, verify: bool = True) -> OpenedReport:
    """Rebuild the new model, reopen the index and read the data of a report folder, and
    check them against the fingerprints in report.json (naming what differs)."""
    from influence.attributor import Attributor
    from influence.report.inputs import encode_labels, load_model, load_table
    from influence.report.schema import validate

    folder = Path(folder)
    bundle, report = read_bundle(folder), read_report(folder)
    validate(report)
    spec = load_model(bundle["new_factory"], folder / bundle["weights"]["new"], "the report's factory",
                      f"{folder / bundle['weights']['new']}")
    task = spec.get("task") or _task(bundle["task"])
    read = dict(input_column=bundle["input_column"], label_column=bundle["label_column"],
                transform=spec.get("transform"))
    tables = {name: load_table(folder / path, f"{folder / path}", bundle.get("feature_columns"),
                               bundle["input_column"]) for name, path in bundle["data"].items()}
    tables, class_names = encode_labels(tables, bundle["label_column"], spec.get("class_names")
                                        or bundle.get("class_names"))
    check_fingerprints(report, {"new_model": model_fingerprint(spec["model"]),
                                "eval": data_fingerprint(as_data(tables["eval"], "eval", **read)),
                                "train": data_fingerprint(as_data(tables["train"], "train", **read))}, folder)
    try:
        attr = Attributor.load(folder / bundle["index"], spec["model"], task=task, train=tables["train"],
                               verify=verify, progress=False, **read)
    except IndexFolderError as error:
        raise IndexFolderError(f"the index {folder / bundle['index']} does not belong to this report's new model "
                               f"and training data ({error}); write the report again") from None
    return OpenedReport(folder, report, bundle, spec, attr, tables["train"], tables["eval"], task, class_names)


def read_report(folder: str | Path) -> dict:
    """report.json of a report folder (not yet validated)."""
    path = Path(folder) / "report.json"
    if not path.is_file():
        raise InvalidArgumentError(f"`--report` {folder} has no report.json (write one with Report.save(folder) or "
                                   "`influence report --out FOLDER`)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(f"`--report` {path} is not valid JSON ({error})") from None


def check_fingerprints(report: dict, current: dict, where: Any) -> None:
    """Refuse when what is opened differs from what `report` was computed on, naming it."""
    differ = differences(report.get("fingerprints") or {}, current)
    if differ:
        what = {"new_model": "the new model's weights", "old_model": "the old model's weights",
                "eval": "the eval data", "train": "the training data"}
        names = ", ".join(what.get(d, d) for d in differ)
        raise InvalidArgumentError(f"the report in {where} was computed on other data or another model: {names} "
                                   f"differ ({', '.join(differ)} fingerprint). Open the report folder alone "
                                   "(influence app --report DIR) or pass exactly what the report was made with")


def _task(spec: dict) -> Task:
    cls = TASKS.get(spec.get("class") or "")
    if cls is None:
        raise InvalidArgumentError("the report's task is not a built-in one; its factory must return a dict with "
                                   "'task' (the influence.Task the model was trained with)")
    return cls(weight_decay=spec.get("weight_decay", 0.0), parameters=spec.get("parameters"))


DEFAULT_MIN_RECOVERED = 0.8  # the recovery gate the printed verify command sets


def verify_command(folder: str | Path, flags: str | Path, out: str | Path,
                   min_recovered: float = DEFAULT_MIN_RECOVERED, program: str = "influence") -> str:
    """The `influence report` line that verifies reviewer `flags` on the report folder `folder`:
    its models and data, the flags applied by retraining (`--verify`), written to `out`, exit 0
    when the flags recover at least `min_recovered` of the drop (exit 1 names the gate)."""
    import shlex

    bundle = read_bundle(folder)
    if not bundle.get("retrain"):
        raise InvalidArgumentError(f"{folder} records no retraining function (--retrain), so its "
                                   "flags cannot be verified by retraining; pass --retrain to "
                                   "`influence report`")
    q = lambda p: shlex.quote(str(Path(folder) / p))  # noqa: E731
    parts = [program, "report", "--old-factory", bundle["factory"],
             "--new-factory", bundle["new_factory"], "--old-weights", q(bundle["weights"]["old"]),
             "--new-weights", q(bundle["weights"]["new"]), "--train", q(bundle["data"]["train"]),
             "--eval", q(bundle["data"]["eval"]), "--group-by", ",".join(bundle["group_by"]),
             "--weight-decay", f"{bundle['task']['weight_decay']:g}",
             "--input-column", bundle["input_column"], "--label-column", bundle["label_column"]]
    if bundle.get("class_names"):
        parts += ["--class-names", shlex.quote(",".join(bundle["class_names"]))]
    if bundle.get("feature_columns"):
        parts += ["--feature-columns", ",".join(bundle["feature_columns"])]
    parts += ["--retrain", bundle["retrain"], "--verify", "--flags", shlex.quote(str(flags)),
              "--out", shlex.quote(str(out)), "--min-recovered", f"{min_recovered:g}"]
    return " ".join(parts)
