"""CPU benchmark: the torch twin of kernels.ce_head_hvp vs the naive autograd HVP.

    PYTHONPATH=. python benchmarks/kernels_cpu.py

One thread (torch.set_num_threads(1), OMP_NUM_THREADS=1), float32. The baseline is
``torch.autograd.functional.hvp`` of the mean cross-entropy of a linear head W (C×d) at logits
Φ·Wᵀ, one call per direction. Prints median times and speed-ups (baseline / twin, same run)
and appends the table to benchmarks/RESULTS.md. Takes well under a minute.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import append_section, markdown_table  # noqa: E402
from influence_kernels.ce_head import ce_head_hvp_torch  # noqa: E402

SHAPES = [(1000, 64, 10, 1), (5000, 256, 10, 1), (5000, 256, 10, 8), (2000, 512, 100, 1)]  # (n, d, C, k)


def median_seconds(fn, min_time=0.5, max_reps=50):
    fn()  # warm-up
    times = []
    while sum(times) < min_time and len(times) < max_reps:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    header = ["n", "d", "C", "k", "autograd hvp ms", "twin ms", "speed-up", "rel. diff"]
    rows = []
    for n, d, C, k in SHAPES:
        phi, W = torch.randn(n, d), torch.randn(C, d) / d**0.5
        y = torch.randint(C, (n,))
        probs = torch.softmax(phi @ W.T, dim=1)
        V = torch.randn(k, C, d)

        def autograd():
            loss = lambda w: F.cross_entropy(phi @ w.T, y)  # noqa: E731
            return torch.stack([torch.autograd.functional.hvp(loss, W, v)[1] for v in V])

        def twin():
            return ce_head_hvp_torch(phi, probs, V)

        ref = autograd().double()
        diff = ((twin().double() - ref).norm() / ref.norm()).item()
        t_ag, t_tw = median_seconds(autograd), median_seconds(twin)
        rows.append([n, d, C, k, f"{t_ag * 1e3:.2f}", f"{t_tw * 1e3:.2f}", f"{t_ag / t_tw:.1f}x", f"{diff:.1e}"])
        print(" ".join(f"{h}={c}" for h, c in zip(header, rows[-1])), flush=True)

    table = markdown_table(header, rows)
    print("\n".join(table))
    append_section("kernels.ce_head_hvp torch twin vs autograd HVP, CPU float32 (benchmarks/kernels_cpu.py)",
                   ["Speed-up = autograd `hvp` time / twin time, medians in the same run.", "", *table])


if __name__ == "__main__":
    main()
