"""`app.flags.FlagStore`: verdicts saved atomically beside the index, reloaded on restart."""

import json

import pytest

from influence.errors import InvalidArgumentError

from app.flags import FlagStore


def test_verdicts_round_trip_through_the_file(tmp_path):
    path = tmp_path / "index.flags.json"
    store = FlagStore(path, n_train=100)
    store.set(5, "mislabeled", label="3", note="<b>x</b>")
    store.set(2, "keep")
    store.set(9, "keep")
    store.set(9, "clear")
    again = FlagStore(path, n_train=100)
    assert [(f["train_id"], f["verdict"], f["note"]) for f in again.all()] == [(2, "keep", ""),
                                                                              (5, "mislabeled", "<b>x</b>")]
    assert again.get(5) == "mislabeled" and again.get(9) == ""
    assert json.loads(path.read_text())["format_version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["index.flags.json"]  # no temporary file left


def test_bad_verdicts_and_ids_are_refused(tmp_path):
    store = FlagStore(tmp_path / "f.json", n_train=3)
    with pytest.raises(InvalidArgumentError, match="verdict"):
        store.set(1, "maybe")
    with pytest.raises(InvalidArgumentError, match="train_id"):
        store.set(3, "keep")
    assert not (tmp_path / "f.json").exists()


def test_another_format_version_is_refused(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"format_version": 99, "flags": []}))
    with pytest.raises(InvalidArgumentError, match="format version"):
        FlagStore(path, n_train=3)
