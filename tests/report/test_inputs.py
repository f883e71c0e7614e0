"""`influence.report.inputs`: the one loader of tables, factories and checkpoints (CLI and app)."""

import json

import pandas as pd
import pytest
import torch

from influence.errors import InvalidArgumentError
from influence.report.inputs import encode_labels, factory_spec, load_table, load_weights


@pytest.fixture
def frame():
    return pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.25, 0.0], "label": ["cat", "dog", "cat"],
                         "source": ["x", "y", "x"]})


@pytest.mark.parametrize("suffix", ["parquet", "csv", "json", "jsonl", "folder"])
def test_every_format_reads_the_same_table(frame, tmp_path, suffix):
    import datasets

    path = tmp_path / f"t.{suffix}"
    {"parquet": lambda: frame.to_parquet(path), "csv": lambda: frame.to_csv(path, index=False),
     "json": lambda: frame.to_json(path, orient="records"),
     "jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     "folder": lambda: datasets.Dataset.from_pandas(frame).save_to_disk(str(path))}[suffix]()
    table = load_table(path, "--train", feature_columns=["a", "b"])
    assert table["input"][1] == [2.0, 0.25] and list(table["label"]) == ["cat", "dog", "cat"]
    assert list(table["source"]) == ["x", "y", "x"]


def test_string_labels_map_to_class_indices(frame):
    import datasets

    tables = {"--train": datasets.Dataset.from_pandas(frame), "--eval": datasets.Dataset.from_pandas(frame[:1])}
    out, names = encode_labels(tables, "label", ["dog", "cat"])
    assert names == ["dog", "cat"] and list(out["--train"]["label"]) == [1, 0, 1]
    assert list(out["--eval"]["label"]) == [1]
    assert encode_labels(tables, "label")[1] == ["cat", "dog"]  # no names given: sorted labels
    with pytest.raises(InvalidArgumentError, match=r"`--train`: label\(s\) \['dog'\] .* are not class names"):
        encode_labels(tables, "label", ["cat"])


def test_factory_specs_and_checkpoints_are_checked(tmp_path, monkeypatch):
    (tmp_path / "facts.py").write_text("import torch\n\ndef good():\n    return {'model': torch.nn.Linear(2, 2), "
                                       "'class_names': ['a', 'b']}\n\ndef odd():\n    return {'model': "
                                       "torch.nn.Linear(2, 2), 'colour': 1}\n\ndef nothing():\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert factory_spec("facts:good", "--factory")["class_names"] == ["a", "b"]
    with pytest.raises(InvalidArgumentError, match=r"returned unknown keys \['colour'\]"):
        factory_spec("facts:odd", "--factory")
    with pytest.raises(InvalidArgumentError, match="must return a torch.nn.Module or a dict with 'model', got int"):
        factory_spec("facts:nothing", "--factory")
    model = torch.nn.Linear(2, 2).double()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    loaded = load_weights(torch.nn.Linear(2, 2), tmp_path / "w.pt", "--weights")
    assert loaded.weight.dtype == torch.float64 and torch.equal(loaded.weight, model.weight)  # its precision
    with pytest.raises(InvalidArgumentError, match="`--weights` .* does not fit the model built by the factory"):
        load_weights(torch.nn.Linear(3, 2), tmp_path / "w.pt", "--weights")
    (tmp_path / "w.json").write_text(json.dumps({}))
    with pytest.raises(InvalidArgumentError, match="is not a safetensors file or a torch checkpoint"):
        load_weights(torch.nn.Linear(2, 2), tmp_path / "w.json", "--weights")
