"""`influence.report.flags`: the flags file format (CSV, JSON Lines, app verdicts) and what a
retraining does with them."""

import json

import pytest

from influence.errors import InvalidArgumentError
from influence.report.flags import Flag, edits, read_flags, write_flags


def test_csv_and_jsonl_round_trip(tmp_path):
    flags = [Flag(3, "mislabeled", "seven", "looks, \"odd\"", "day-1"), Flag(9, "remove"), Flag(4, "keep")]
    for suffix in ("csv", "jsonl"):
        path = write_flags(tmp_path / f"flags.{suffix}", flags)
        assert read_flags(path) == flags
    header = (tmp_path / "flags.csv").read_text().splitlines()[0]
    assert header == "train_id,verdict,corrected_label,note,source"


def test_edits_remove_relabel_and_keep():
    flags = [Flag(3, "mislabeled", "seven"), Flag(5, "mislabeled"), Flag(9, "remove"), Flag(4, "keep"),
             Flag(6, "mislabeled", "2"), Flag(9, "keep")]  # a later flag on row 9 replaces the earlier one
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    assert edits(flags, 10, names) == ([5], {3: 7, 6: 2})
    with pytest.raises(InvalidArgumentError, match="corrected label 'eight' is not one of"):
        edits([Flag(1, "mislabeled", "eight")], 10, names)
    with pytest.raises(InvalidArgumentError, match="train_id 12 is outside the training data"):
        edits([Flag(12, "remove")], 10)


@pytest.mark.parametrize("text, message", [
    ("train_id,verdict\n3,delete\n", r"line 2: `verdict` must be one of"),
    ("train_id,verdict\nx,keep\n", r"line 2: `train_id` must be an integer"),
    ("id,verdict\n3,keep\n", r"lacks the column\(s\) \['train_id'\]"),
])
def test_bad_files_name_the_line_and_the_field(tmp_path, text, message):
    path = tmp_path / "flags.csv"
    path.write_text(text)
    with pytest.raises(InvalidArgumentError, match=message):
        read_flags(path)


def test_jsonl_errors_and_other_suffixes(tmp_path):
    path = tmp_path / "flags.jsonl"
    path.write_text(json.dumps({"train_id": 1, "verdict": "keep"}) + "\n{oops\n")
    with pytest.raises(InvalidArgumentError, match="line 2 is not valid JSON"):
        read_flags(path)
    (tmp_path / "flags.txt").write_text("")
    with pytest.raises(InvalidArgumentError, match="must be a .csv, .jsonl or .json file"):
        read_flags(tmp_path / "flags.txt")
    with pytest.raises(InvalidArgumentError, match="no such file"):
        read_flags(tmp_path / "nowhere.csv")
