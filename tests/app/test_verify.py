"""The verify step of the review loop: `influence report --flags ... --verify`, as the demo and the
app print it. Flags are checked before any work (exit 2 writes nothing); the printed command exits
0 when the flags recover enough of the drop and names the gate otherwise; the verified verdicts
follow into the new folder, which the app opens with them."""

from __future__ import annotations

import csv
import json
import shlex
import time

import numpy as np
import pytest

from influence.report.bundle import verify_command
from influence.report.flags import Flag, write_flags
from tests.app.conftest import run_cli


def printed_verify_command(demo_report) -> str:
    """The verify line `influence demo` printed (with its placeholder flags file)."""
    lines = (demo_report.parent / "demo-stdout.txt").read_text().splitlines()
    return next(line.strip() for line in lines
                if "--flags" in line and line.strip().startswith("influence report"))


def run_printed(command: str, flags, out):
    args = shlex.split(command)[1:]
    args[args.index("--flags") + 1], args[args.index("--out") + 1] = str(flags), str(out)
    return run_cli(*args)


def test_the_demo_prints_the_verify_command_of_its_folder(demo_report, tmp_path):
    printed = printed_verify_command(demo_report)
    assert printed == verify_command(demo_report, "flags.csv", demo_report / "verified")
    assert "--min-recovered 0.8" in printed and "--fail-on" not in printed


def true_label_flags(demo_report) -> list[Flag]:
    """'mislabeled' with the clean label for every row the demo corrupted (the perfect review)."""
    import datasets

    from influence.demos.data import load_digits_dataset

    corrupted = datasets.Dataset.from_parquet(str(demo_report / "data" / "train.parquet"))["label"]
    clean = load_digits_dataset(seed=0)[0]["label"]
    rows = np.flatnonzero(np.asarray(corrupted) != np.asarray(clean))
    return [Flag(int(i), "mislabeled", str(clean[i]), "clean label", "batch-9") for i in rows]


def test_the_printed_command_passes_when_the_flags_recover_the_drop(demo_report, tmp_path):
    """Why 6: exit 0 when the verified recovery passes its gate; the verdicts follow into --out."""
    flags = true_label_flags(demo_report)
    path = write_flags(tmp_path / "flags.csv", flags)
    out = tmp_path / "verified"
    proc = run_printed(printed_verify_command(demo_report), path, out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "PASS: min-recovered: the flags recovered" in proc.stdout and "FAIL" not in proc.stdout
    checked = json.loads((out / "report.json").read_text())["verification"]
    fix = next(v for v in checked if v["kind"] == "flags")
    assert fix["relabelled"] == len(flags) and fix["recovered"] >= 0.8
    saved = json.loads((out / "flags.json").read_text())
    assert [(f["train_id"], f["verdict"], f["corrected_label"]) for f in saved["flags"]] == \
        [(f.train_id, f.verdict, f.corrected_label) for f in flags]
    from influence_app.flags import FlagStore

    opened = FlagStore(out / "flags.json", n_train=saved["n_train"])  # what the app on --out shows
    assert [f["train_id"] for f in opened.all()] == [f.train_id for f in flags]


def test_the_printed_command_names_the_gate_that_failed(demo_report, tmp_path):
    flags = true_label_flags(demo_report)[:2]
    path = write_flags(tmp_path / "flags.csv", flags)
    proc = run_printed(printed_verify_command(demo_report), path, tmp_path / "verified")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "FAIL: min-recovered: the flags recovered" in proc.stdout
    assert "< the gate 80%" in proc.stdout


@pytest.mark.parametrize("row, message", [
    ({"train_id": "999999", "verdict": "remove"}, "train_id 999999 is outside the training data"),
    ({"train_id": "3", "verdict": "mislabeled", "corrected_label": "eleven"},
     "corrected label 'eleven' is not"),
    ({"train_id": "3", "verdict": "delete"}, "`verdict` must be one of"),
])
def test_a_bad_flags_file_is_refused_before_any_work_and_writes_nothing(demo_report, tmp_path, row,
                                                                         message):
    """Why 6: an unknown train id (or verdict, or label) is reported in seconds, exit 2, --out
    not created."""
    path = tmp_path / "flags.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["train_id", "verdict", "corrected_label", "note",
                                               "source"])
        writer.writeheader()
        writer.writerow(row)
    out = tmp_path / "verified"
    started = time.perf_counter()
    proc = run_printed(printed_verify_command(demo_report), path, out)
    seconds = time.perf_counter() - started
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()  # exit 2 writes nothing
    assert seconds < 30, f"refused after {seconds:.0f} s"
