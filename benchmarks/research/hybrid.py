"""Low-rank eigenspace + EK-FAC tail: the top-r GGN eigenpairs where EK-FAC is worst, EK-FAC elsewhere.

With (U, e) the top-r eigenpairs of the GGN (ggn.LowRankTail) and P_ek the EK-FAC inverse
(influence/methods/ekfac.py, same λ):

    P = U diag(1/(e + wd + λ)) Uᵀ + (I − UUᵀ) P_ek (I − UUᵀ)

i.e. the exact inverse on span(U) and EK-FAC's on its complement (cross terms dropped).
Scores q P g = (Uᵀq)ᵀ D (Uᵀg) + q_⊥ᵀ P_ek g_⊥ with q_⊥ = q − UUᵀq; the index would hold
[Uᵀg, EK-FAC-rotated g_⊥]; self-influence = Σ_k (u_kᵀg)² d_k + g_⊥ᵀ P_ek g_⊥.
Sign convention (the package's): score[j, i] = ∇m(test_j)ᵀ P ∇ℓ(train_i), positive = helpful.

    OMP_NUM_THREADS=1 python benchmarks/research/hybrid.py digits [r_max]
"""

from __future__ import annotations

import sys
import time
import warnings

import torch

import problems as P
from ggn import LowRankTail

import influence as inf


class Hybrid:
    """P = U D Uᵀ + (I − UUᵀ) P_ek (I − UUᵀ); `lowrank` a fitted ggn.LowRankTail, `ekfac` the
    library's fitted EK-FAC method (its `precondition(G)` acts on flat gradients [m, p])."""

    def __init__(self, lowrank: LowRankTail, ekfac, rank: int):
        self.U = lowrank.U[:, :rank]
        self.d = 1.0 / (lowrank.e[:rank] + lowrank.wd + ekfac.damping)
        self.ekfac = ekfac

    def precondition(self, V: torch.Tensor) -> torch.Tensor:
        V = V.to(self.U.dtype)
        head = V @ self.U
        rest = V - head @ self.U.T
        rest = self.ekfac.precondition(rest).to(self.U.dtype)
        return (head * self.d) @ self.U.T + rest - (rest @ self.U) @ self.U.T


def main() -> None:
    name = sys.argv[1]
    r_max = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    pr = P.lds_problem(name)
    start = time.perf_counter()
    lr = LowRankTail(pr.model, pr.task, rank=r_max, passes=2).fit(pr.X, pr.y)
    print(f"{name}: eigenspace r={r_max} in {time.perf_counter() - start:.0f} s", flush=True)
    Q = lr.factors.grads(pr.Xq, pr.yq, pr.task.measurement).to(lr.dtype)
    rec = __import__("study").Recorder("lds", name, again=False)
    attr = inf.Attributor(pr.model, (pr.X, pr.y), task=pr.task, method="ekfac", damping=1.0, progress=False).fit()
    ek = attr.method
    for ratio in (0.03, 0.3, 1.0, 3.0, 10.0, 30.0):
        lr.set_damping(ratio)
        state = ek.state_dict()
        state["damping"] = torch.tensor(lr.damping, dtype=torch.float64)
        ek.load_state_dict(state)  # same factors, this λ
        if not rec.has("ekfac (library)", f"ratio {ratio:g}"):
            rec.add("ekfac (library)", f"ratio {ratio:g}", pr.truth(ek.precondition(Q) @ lr.G.T).score)
        for r in (25, 50, 100, 200, 400):
            if r > r_max or rec.has(f"hybrid r={r}", f"EK-FAC tail, ratio {ratio:g}"):
                continue
            hy = Hybrid(lr, ek, r)
            rec.add(f"hybrid r={r}", f"EK-FAC tail, ratio {ratio:g}", pr.truth(hy.precondition(Q) @ lr.G.T).score,
                    damping=lr.damping)
        if ratio >= 10:  # the scalar-tail candidate past study.py's sweep
            sub = lr.truncate(r_max)
            sub.set_damping(ratio)
            rec.add(f"lowrank r={r_max}", f"tail mean, ratio {ratio:g}", pr.truth(sub.precondition(Q) @ lr.G.T).score,
                    damping=sub.damping)

if __name__ == "__main__":
    main()
