"""benchmarks/kernels_gpu.py must keep working: run its --smoke mode (CPU, Triton interpreter)."""

import json
import os
import pathlib
import subprocess
import sys

from kernel_test_utils import needs_interpreter

ROOT = pathlib.Path(__file__).resolve().parents[2]


@needs_interpreter
def test_gpu_benchmark_smoke_mode(tmp_path):
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    env = dict(os.environ, OUT=str(tmp_path), TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels_gpu.py"), "--smoke"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "kernels_gpu.jsonl").read_text().splitlines()]
    variants = {(r["op"], r.get("variant")) for r in records}
    assert ("ce_head_hvp", "triton deterministic") in variants and ("project", "triton gaussian") in variants
    assert ("score_topk", "triton fused score+top-k") in variants
    assert all(r.get("ok", True) or r.get("error") == "skipped" for r in records)
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == results  # smoke runs never append


def test_gpu_benchmark_without_cuda_exits_cleanly(tmp_path):
    if __import__("torch").cuda.is_available():
        return
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"OUT": str(tmp_path)}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels_gpu.py")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "no CUDA device" in run.stdout
    assert not any(tmp_path.iterdir())
