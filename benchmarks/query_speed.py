"""Ask again and again: index build and query latency on MNIST (50,000 training images).

MLP 784-64-10 (float32, full-batch Adam), `method="trak"` at projection dims 512 and 2048,
with the default dense Rademacher projection and with `projection="countsketch"`, index on
disk (float32, and float16 for the accuracy cost). Prints fit throughput, index
size, `top_k` latency for 1 and for 1,000 test points, `group_scores` latency, the ratio
to recomputing the training pass per query (measured in the same run), and the accuracy
cost of projection (Spearman vs exact gradient inner products on 5,000 training examples)
and of float16 storage (Spearman vs the float32 index). Appends to RESULTS.md.

    OMP_NUM_THREADS=2 python benchmarks/query_speed.py [--n-train 50000] [--dims 512,2048]
        [--projections rademacher,countsketch]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import influence as inf  # noqa: E402
from _results import append_section, markdown_table  # noqa: E402
from influence.demos.data import load_mnist  # noqa: E402
from influence.gradients import per_example_grads  # noqa: E402
from influence.model import FunctionalModel  # noqa: E402
from influence.projection import CountSketch, Projector  # noqa: E402
from influence.demos.training import train_adam  # noqa: E402


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    """Median wall time over `repeats` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--dims", default="512,2048")
    parser.add_argument("--projections", default="rademacher,countsketch")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]

    X, y = (torch.from_numpy(a) for a in load_mnist("train", limit=args.n_train))
    Xt, yt = (torch.from_numpy(a) for a in load_mnist("test", limit=1000))
    task = inf.ClassificationTask(weight_decay=1e-4)
    model = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    seconds, _ = timed(lambda: train_adam(model, X, y, task, epochs=args.epochs, lr=0.01))
    with torch.no_grad():
        accuracy = float((model(Xt).argmax(1) == yt).float().mean())
    fm = FunctionalModel(model)
    sources = [f"source-{i * 10 // len(y)}" for i in range(len(y))]
    print(f"MNIST n_train={len(y)}, MLP p={fm.p}, test accuracy {accuracy:.3f} (trained in {seconds:.0f} s)")

    one, thousand = (Xt[:1], yt[:1]), (Xt, yt)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="influence-query-speed-"))
    try:
        runs = [(int(d), kind) for d in args.dims.split(",") for kind in args.projections.split(",")]
        for k, kind in runs:
            settings = dict(method="trak", projection_dim=k, projection=kind, batch_size=500, progress=False)
            folder = work / f"k{k}-{kind}"
            fit_s, attr = timed(lambda: inf.Attributor(model, (X, y), task=task, cache_dir=folder, **settings).fit())
            size = folder_bytes(folder)
            attr.top_k(one, k=10)  # warm-up: page the index in, build the cached projection
            one_s, _ = timed(lambda: attr.top_k(one, k=10), repeats=20)
            many_s, _ = timed(lambda: attr.top_k(thousand, k=10), repeats=3)
            group_s, _ = timed(lambda: attr.group_scores(thousand, sources), repeats=3)
            # the per-query alternative: a pass over the training data for every question
            scratch_s, _ = timed(lambda: attr._gradients(attr.train, task.loss, "train"))
            fp16 = inf.Attributor(model, (X, y), task=task, cache_dir=work / "fp16", storage_dtype="float16",
                                  **settings).fit()
            fp16.top_k(one, k=10)
            one16_s, _ = timed(lambda: fp16.top_k(one, k=10), repeats=5)
            probe = (Xt[:100], yt[:100])
            rho16 = spearmanr(attr.scores(probe).flatten(), fp16.scores(probe).flatten())[0]
            rho_proj = projection_fidelity(fm, task, X[:5000], y[:5000], probe, k, kind)
            rows.append([k, kind, f"{len(y) / fit_s:,.0f}", f"{size / 2**20:,.0f}", f"{one_s * 1e3:.1f}",
                         f"{many_s:.2f}", f"{group_s:.2f}", f"{(scratch_s + one_s) / one_s:,.0f}×",
                         f"{rho_proj:.3f}", f"{rho16:.4f}", f"{one16_s * 1e3:.0f}"])
            print(rows[-1])
            shutil.rmtree(work / "fp16")
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header = ["k", "projection", "fit (ex/s)", "index MiB (fp32)", "top-10, 1 query (ms, median of 20)",
              "top-10, 1,000 queries (s)",
              "group_scores, 1,000 queries (s)", "speed-up vs a training pass per query",
              "Spearman: projected vs exact grad dot (5k train)", "Spearman: fp16 vs fp32 index",
              "fp16 index: 1 query (ms)"]
    table = markdown_table(header, rows)
    print("\n".join(table))
    print("bars: 1 query < 50 ms; 1,000 queries < 5 s")
    if not args.no_record:
        append_section("Query speed, MNIST 50k MLP, trak index (benchmarks/query_speed.py)", [
            f"n_train={len(y)}, MLP 784-64-10 (p={fm.p}), float32, index on local disk (memory-mapped), "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}. Bars: 1 query < 50 ms, "
            f"1,000 queries < 5 s. Machine load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} "
            f"at the end ({os.cpu_count()} cores; queries are memory-bound, other jobs inflate them).", "", *table])


def projection_fidelity(fm, task, X, y, probe, k: int, kind: str) -> float:
    """Spearman between projected and exact gradient inner products (test × 5k train)."""
    projector = CountSketch(fm.p, k, seed=0) if kind == "countsketch" else Projector(fm.p, k, seed=0, dist=kind)
    exact, projected = [], []
    test_grads = per_example_grads(fm, task.measurement, *probe)
    test_phi = projector(test_grads)
    for lo in range(0, len(y), 500):
        G = per_example_grads(fm, task.loss, X[lo:lo + 500], y[lo:lo + 500])
        exact.append(test_grads @ G.T)
        projected.append(test_phi @ projector(G).T)
    return float(spearmanr(torch.cat(exact, 1).flatten(), torch.cat(projected, 1).flatten())[0])


if __name__ == "__main__":
    main()
