"""The `influence demo` command, end to end (short training)."""

import subprocess
import sys


def test_demo_runs_and_writes_grid(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "influence.cli", "demo", "--epochs", "60", "--worst", "2", "--k", "3",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "most harmful" in proc.stdout and "most helpful" in proc.stdout
    assert "damping" in proc.stdout and "converged" in proc.stdout
    png = out / "trace_grid.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_errors_cleanly():
    proc = subprocess.run([sys.executable, "-m", "influence.cli", "demo", "--method", "nope"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
