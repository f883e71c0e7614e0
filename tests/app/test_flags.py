"""`app.flags.FlagStore`: verdicts saved atomically beside the index, reloaded on restart, exported
in the format `influence report --flags` reads."""

import json

import pytest

from influence_app.flags import FlagStore
from influence.errors import InvalidArgumentError
from influence.report.flags import Flag, read_flags


def test_verdicts_round_trip_through_the_file(tmp_path):
    path = tmp_path / "index.flags.json"
    store = FlagStore(path, n_train=100)
    store.set(5, "mislabeled", label="3", note="<b>x</b>", corrected_label="8", source="batch-1")
    store.set(2, "keep")
    store.set_many([9, 10], "remove")
    store.set(9, "clear")
    again = FlagStore(path, n_train=100)
    assert [(f["train_id"], f["verdict"], f["corrected_label"], f["note"]) for f in again.all()] == [
        (2, "keep", "", ""), (5, "mislabeled", "8", "<b>x</b>"), (10, "remove", "", "")]
    assert again.get(5) == "mislabeled → 8" and again.get(9) == "" and again.get(10) == "remove"
    assert json.loads(path.read_text())["format_version"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["index.flags.json"]  # no temporary file left


def test_exports_are_what_the_report_reads(tmp_path):
    store = FlagStore(tmp_path / "f.json", n_train=20)
    store.set(3, "mislabeled", corrected_label="7", note='a "quoted", note', source="day-1")
    store.set(4, "remove", source="day-2")
    expected = [Flag(3, "mislabeled", "7", 'a "quoted", note', "day-1"), Flag(4, "remove", "", "", "day-2")]
    for suffix in ("csv", "jsonl"):
        assert read_flags(store.export(tmp_path / f"flags.{suffix}")) == expected
    assert read_flags(tmp_path / "f.json") == expected  # the verdicts file itself too


def test_bad_verdicts_and_ids_are_refused(tmp_path):
    store = FlagStore(tmp_path / "f.json", n_train=3)
    with pytest.raises(InvalidArgumentError, match="verdict"):
        store.set(1, "maybe")
    with pytest.raises(InvalidArgumentError, match="train_id"):
        store.set(3, "keep")
    with pytest.raises(InvalidArgumentError, match="corrected label goes with the verdict 'mislabeled'"):
        store.set(1, "remove", corrected_label="2")
    assert not (tmp_path / "f.json").exists()


def test_version_1_files_are_read_and_another_version_is_refused(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"format_version": 1, "flags": [{"train_id": 2, "verdict": "keep", "label": "1",
                                                               "note": "", "time": "t"}]}))
    assert FlagStore(path, n_train=3).get(2) == "keep"
    path.write_text(json.dumps({"format_version": 99, "flags": []}))
    with pytest.raises(InvalidArgumentError, match="format version"):
        FlagStore(path, n_train=3)


def test_bulk_flags_keep_hand_made_verdicts_and_say_how_many(tmp_path):
    store = FlagStore(tmp_path / "f.json", n_train=20, who="ana")
    store.set(3, "mislabeled", corrected_label="1", note="looks like a one")
    store.set(4, "mislabeled", corrected_label="0", note="scan error")
    outcome = store.set_many([2, 3, 4, 5], "remove", by="bulk", replace_hand_made=False)
    assert (outcome.changed, outcome.kept) == (2, 2)
    flags = {f["train_id"]: f for f in store.all()}
    three = (flags[3]["verdict"], flags[3]["corrected_label"], flags[3]["note"])
    assert three == ("mislabeled", "1", "looks like a one")
    assert (flags[2]["verdict"], flags[2]["by"], flags[2]["who"]) == ("remove", "bulk", "ana")
    replaced = store.set_many([3, 4], "remove", by="bulk", replace_hand_made=True)
    assert (replaced.changed, replaced.kept) == (2, 0) and store.get(3) == "remove"


def test_undo_restores_the_previous_verdicts_and_history_records_every_action(tmp_path):
    path = tmp_path / "f.json"
    store = FlagStore(path, n_train=20, who="ana")
    store.set(3, "mislabeled", corrected_label="1", note="n3")
    store.set_many([3, 7, 8], "remove", by="bulk")
    assert store.undo()["ids"] == [3, 7, 8]
    again = FlagStore(path, n_train=20)  # the undo was saved
    assert [(f["train_id"], f["verdict"], f["note"]) for f in again.all()] == \
        [(3, "mislabeled", "n3")]
    assert again.undo()["ids"] == [3] and again.all() == [] and again.undo() is None
    actions = [(h["action"], h["ids"], h["who"]) for h in FlagStore(path, n_train=20).history()]
    assert actions == [("save", [3], "ana"), ("bulk", [3, 7, 8], "ana"), ("undo", [3, 7, 8], "ana"),
                       ("undo", [3], again.who)]
    previous = FlagStore(path, n_train=20).history()[1]["previous"]
    assert previous["3"]["verdict"] == "mislabeled" and previous["7"] is None


def test_a_verdicts_file_of_other_data_is_refused(tmp_path):
    path = tmp_path / "f.json"
    FlagStore(path, n_train=50).set(40, "keep")
    with pytest.raises(InvalidArgumentError, match="train_id 40 is outside the training data"):
        FlagStore(path, n_train=10)
