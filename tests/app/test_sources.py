"""`app.sources`: opening an own model's index; errors name the real fix; string labels with a
label mapping (the factory's class names); eval data without the training metadata columns."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import influence as inf
from influence_app.session import Session
from influence_app.sources import open_index
from influence.errors import InvalidArgumentError
from tests.app.factory import NAMES, named_digits

FACTORY = "tests.app.factory:small_digits"


def test_a_factory_without_the_indexs_task_is_told_to_return_it(digits_folder):
    f = digits_folder
    expected = (r"built with the task ClassificationTask\(weight_decay=0.001\), but --factory "
                r"tests.app.factory:bare_small_digits gives ClassificationTask\(weight_decay=0.0\); make the factory "
                r"return \{'model': ..., 'task': ClassificationTask\(weight_decay=0.001\)\}")
    with pytest.raises(InvalidArgumentError, match=expected):
        open_index(f / "index", "tests.app.factory:bare_small_digits", f / "train", f / "eval",
                   weights=f / "model.safetensors")


def test_other_weights_are_told_to_pass_the_indexs_weights(digits_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    f = digits_folder
    state = {k: v + 0.01 for k, v in load_file(f / "model.safetensors").items()}
    save_file(state, tmp_path / "other.safetensors")
    with pytest.raises(InvalidArgumentError, match="built for other weights than the model opened here: pass the "
                                                   "--weights the index was fitted with"):
        open_index(f / "index", FACTORY, f / "train", f / "eval", weights=tmp_path / "other.safetensors")


def test_missing_and_unreadable_files_are_named(digits_folder, tmp_path):
    f = digits_folder
    with pytest.raises(InvalidArgumentError, match=r"`--train`: no such file or folder '.*nowhere.parquet'"):
        open_index(f / "index", FACTORY, tmp_path / "nowhere.parquet", f / "eval", weights=f / "model.safetensors")
    (tmp_path / "eval.txt").write_text("x")
    with pytest.raises(InvalidArgumentError, match=r"`--eval`: .* must be a datasets folder \(save_to_disk\) or a "
                                                   r"\.parquet/\.csv/\.json/\.jsonl file"):
        open_index(f / "index", FACTORY, f / "train", tmp_path / "eval.txt", weights=f / "model.safetensors")
    with pytest.raises(InvalidArgumentError, match="`--factory`: cannot import module 'nowhere'"):
        open_index(f / "index", "nowhere:model", f / "train", f / "eval")


@pytest.fixture(scope="module")
def named(digits_folder, tmp_path_factory):
    """Digits as CSV/JSONL files with string labels ("three"), an index fitted on their class indices."""
    import datasets
    from safetensors.torch import save_file

    from influence.demos.training import train_adam

    folder = tmp_path_factory.mktemp("named")
    train = datasets.load_from_disk(str(digits_folder / "train")).select(range(300))
    test = datasets.load_from_disk(str(digits_folder / "eval")).select(range(60)).remove_columns(["source", "index"])
    spec = named_digits()
    X, y = torch.tensor(np.stack(train["input"]), dtype=torch.float32), torch.tensor(train["label"])
    torch.manual_seed(0)
    train_adam(spec["model"], X, y, spec["task"], epochs=100, lr=0.05)
    save_file(spec["model"].state_dict(), str(folder / "model.safetensors"))
    inf.Attributor(spec["model"], train, task=spec["task"], method="exact", cache_dir=folder / "index",
                   progress=False).fit()
    for name, data in (("train", train), ("eval", test)):
        frame = data.to_pandas()
        frame["label"] = [NAMES[v] for v in frame["label"]]
        frame.to_json(folder / f"{name}.jsonl", orient="records", lines=True)
    return folder


def test_string_labels_are_mapped_by_the_factorys_class_names(named):
    setup = open_index(named / "index", "tests.app.factory:named_digits", named / "train.jsonl", named / "eval.jsonl",
                       weights=named / "model.safetensors")
    assert setup.class_names == NAMES and setup.eval.column_names == ["input", "label"]
    session = Session(setup)
    table, _ = session.predictions("all", "all", "all", 0)
    assert set(table["true"]) <= set(NAMES)
    trace = session.trace(int(table["eval id"][0]), 3)
    assert trace.label in NAMES and set(trace.harmful["label"]) <= set(NAMES)


def test_labels_outside_the_class_names_are_named(named, tmp_path):
    import pandas as pd

    shutil.copy(named / "train.jsonl", tmp_path / "train.jsonl")
    frame = pd.read_json(named / "eval.jsonl", lines=True)
    frame.loc[3, "label"] = "eleven"
    frame.to_json(tmp_path / "eval.jsonl", orient="records", lines=True)
    with pytest.raises(InvalidArgumentError, match=r"`--eval`: label\(s\) \['eleven'\] of column 'label' are not "
                                                   r"class names .*; make the factory return 'class_names'"):
        open_index(named / "index", "tests.app.factory:named_digits", tmp_path / "train.jsonl",
                   tmp_path / "eval.jsonl", weights=named / "model.safetensors")
