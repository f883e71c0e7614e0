"""Hybrid with an eigenspace from sampled-label gradient rows (K = 1 per example) instead of the
exact K = C − 1 output factors: is the cheap eigenspace good enough? (see hybrid.py)

    OMP_NUM_THREADS=1 python benchmarks/research/hybrid_sampled.py mnist5k [rows] [passes]
"""

from __future__ import annotations

import sys
import time
import warnings

import torch

import problems as P
from ggn import LowRankTail
from hybrid import Hybrid

import influence as inf


def main() -> None:
    name = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else None
    passes = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    pr = P.lds_problem(name)
    start = time.perf_counter()
    lr = LowRankTail(pr.model, pr.task, rank=400, passes=passes, curvature_rows=rows, sampled_rows=True)
    lr.factors.grads = lambda *a, **k: torch.empty(0, lr.factors.p)
    lr.fit(pr.X, pr.y)
    del lr.factors.grads
    eig_s = time.perf_counter() - start
    lr.G = lr.factors.grads(pr.X, pr.y).to(lr.dtype)
    Q = lr.factors.grads(pr.Xq, pr.yq, pr.task.measurement).to(lr.dtype)
    rec = __import__("study").Recorder("lds", name, again=False)
    attr = inf.Attributor(pr.model, (pr.X, pr.y), task=pr.task, method="ekfac", damping=1.0, progress=False).fit()
    ek = attr.method
    tag = f"sampled rows{'' if rows is None else f' ({rows})'}, {passes} passes"
    for ratio in (0.3, 1.0, 3.0):
        lr.set_damping(ratio)
        state = ek.state_dict()
        state["damping"] = torch.tensor(lr.damping, dtype=torch.float64)
        ek.load_state_dict(state)
        for r in (100, 200, 400):
            rec.add(f"hybrid r={r}", f"EK-FAC tail, {tag}, ratio {ratio:g}",
                    pr.truth(Hybrid(lr, ek, r).precondition(Q) @ lr.G.T).score, eig_s=eig_s)


if __name__ == "__main__":
    main()
