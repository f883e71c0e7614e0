"""Speed-shaped prototypes of the "auto" candidates: fit once, stream the training set once,
then every query and self-influence is a product (benchmarks/default_speed.py times these).

The math is ggn.py's and kfac.py's; what changes here is the data flow the library needs:

- the training gradients are streamed in blocks, never held as one n×p tensor unless
  n·p·4 bytes fits `index_budget` (then the index is the float32 gradients, "full");
- self-influence is computed in the same pass (it needs no index: g_iᵀ P g_i per block);
- over the budget the index is compressed: `LowRankTailIndex` stores [Uᵀg (r), count-sketch
  of g − UUᵀg (k)], `EKFACIndex` stores the rotated gradient's head (largest Λ) and a
  count-sketch of its tail; the query side carries the preconditioner's weights.

Every class: `fit(X, y) -> self`, `scores(Xq, yq) -> Tensor[n_q, n]`, `self_influence() -> Tensor[n]`,
`describe() -> str`, `timings` (seconds per phase). Sign convention (the package's):
score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i), positive = helpful.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

import influence as inf
from ggn import ExactGGN, LowRankTail
from kfac import EKFACEigen

DEFAULT_BUDGET = 2 * 2**30  # bytes of float32 index kept whole


class CountSketch:
    """h: [p] bucket per coordinate, s: [p] random sign; sketch(V) = V Sᵀ with S [k, p] one ±1 per column."""

    def __init__(self, p: int, k: int, seed: int, dtype: torch.dtype):
        gen = torch.Generator().manual_seed(seed)
        self.k = k
        self.bucket = torch.randint(0, k, (p,), generator=gen)
        self.sign = (torch.randint(0, 2, (p,), generator=gen) * 2 - 1).to(dtype)

    def __call__(self, V: Tensor) -> Tensor:
        out = torch.zeros(V.shape[0], self.k, dtype=V.dtype)
        return out.index_add_(1, self.bucket, V * self.sign.to(V.dtype))


def _timed(timings: dict, key: str):
    class _T:
        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - self.start
    return _T()


class ExactJacobian:
    """`ggn.ExactGGN` with a Cholesky factor of H + λI (one damping), the float32 gradient
    index (n×p must fit `index_budget`) and self-influence from the same pass.

    Cost: n·K·p² for the Gram (K = C − 1 factor rows per example), p³/3 for Cholesky,
    n·p² for self-influence; memory p² + n·p floats.
    """

    name = "exact-jac"

    def __init__(self, model: nn.Module, task: inf.Task, damping_ratio: float = 0.3, dtype=None,
                 index_budget: int = DEFAULT_BUDGET, batch_size: int = 256):
        dtype = dtype or next(model.parameters()).dtype
        self.inner = ExactGGN(model, task, damping_ratio=damping_ratio, solver="cholesky", dtype=dtype,
                              batch_size=batch_size)
        self.budget = index_budget
        self.timings = self.inner.timings

    def fit(self, X: Tensor, y: Tensor) -> ExactJacobian:
        p = self.inner.factors.p
        if len(y) * p * 4 > self.budget:
            raise MemoryError(f"exact-jac keeps the n×p gradients ({len(y) * p * 4 / 2**30:.1f} GiB > budget)")
        self.inner.fit(X, y)
        with _timed(self.timings, "self_influence"):
            self._self = self.inner.self_influence()
        return self

    def scores(self, Xq: Tensor, yq: Tensor) -> Tensor:
        return self.inner.scores(Xq, yq)

    def self_influence(self) -> Tensor:
        return self._self

    def describe(self) -> str:
        return f"Cholesky of the p×p GGN, λ = {self.inner.ratio:g} × mean eigenvalue"


class LowRankTailIndex:
    """`ggn.LowRankTail` (Nyström + power iteration from the per-example factors of
    `curvature_rows` examples) with a streamed index and self-influence.

    Index: the float32 gradients when n·p·4 ≤ `index_budget`, else [Uᵀg, CS(g − UUᵀg)]
    (r + sketch_dim floats per example)."""

    name = "lowrank-tail"

    def __init__(self, model: nn.Module, task: inf.Task, rank: int = 400, passes: int = 2,
                 damping_ratio: float = 0.3, curvature_rows: int | None = 5000, sketch_dim: int = 4096,
                 index_budget: int = DEFAULT_BUDGET, dtype=None, batch_size: int = 256, seed: int = 0):
        dtype = dtype or next(model.parameters()).dtype
        self.inner = LowRankTail(model, task, rank=rank, passes=passes, damping_ratio=damping_ratio,
                                 curvature_rows=curvature_rows, dtype=dtype, batch_size=batch_size, seed=seed)
        self.task, self.budget, self.sketch_dim, self.seed = task, index_budget, sketch_dim, seed
        self.timings: dict[str, float] = {}

    def fit(self, X: Tensor, y: Tensor) -> LowRankTailIndex:
        lr = self.inner
        start = time.perf_counter()
        lr.index = "none"
        lr.factors.grads = lambda *a, **k: torch.empty(0, lr.factors.p)  # skip its whole-G pass
        lr.fit(X, y)
        del lr.factors.grads
        self.timings["eigenspace"] = time.perf_counter() - start
        p, self.n = lr.factors.p, len(y)
        self.full = self.n * p * 4 <= self.budget
        if not self.full:
            self.sketch = CountSketch(p, self.sketch_dim, self.seed + 1, lr.dtype)
        features, selfs = [], []
        with _timed(self.timings, "gradients"):
            for _, g in lr.factors.batches(X, y, factors=False):
                g = g.to(lr.dtype)
                head = g @ lr.U
                rest = (g * g).sum(1) - (head * head).sum(1)
                selfs.append((head * head) @ lr.d + lr.d_tail * rest.clamp_min(0))
                if self.full:
                    features.append(g.float())
                else:
                    features.append(torch.cat([head, self.sketch(g - head @ lr.U.T)], 1).float())
        self.features, self._self = torch.cat(features), torch.cat(selfs)
        return self

    def scores(self, Xq: Tensor, yq: Tensor) -> Tensor:
        lr = self.inner
        Q = lr.factors.grads(Xq, yq, self.task.measurement).to(lr.dtype)
        if self.full:
            return (lr.precondition(Q).float() @ self.features.T).to(lr.dtype)
        head = Q @ lr.U
        fq = torch.cat([head * lr.d, lr.d_tail * self.sketch(Q - head @ lr.U.T)], 1)
        return (fq.float() @ self.features.T).to(lr.dtype)

    def self_influence(self) -> Tensor:
        return self._self

    def describe(self) -> str:
        lr = self.inner
        rows = "all" if lr.curvature_rows is None else f"{lr.curvature_rows}"
        index = "full gradients" if self.full else f"r + count-sketch {self.sketch_dim}"
        return f"r={lr.rank}, {lr.passes} passes on {rows} rows, tail mean, index {index}"


def _head_and_sketch(ek, n: int, keep: float, sketch_dim: int, budget: int, seed: int
                     ) -> tuple[bool, Tensor, CountSketch | None]:
    """(full, head, sketch): whether the n × p rotated index fits in `budget` bytes (float32);
    if not, the `keep` share of eigenbasis components of largest Λ kept as they are (`head`,
    bool [p]) and a count-sketch for the rest (else every component in the head, no sketch)."""
    p = ek.p
    if n * p * 4 <= budget:
        return True, torch.ones(p, dtype=torch.bool), None
    lam = torch.cat([l.reshape(-1) for l in ek.Lam])
    head = torch.zeros(p, dtype=torch.bool)
    head[lam.argsort(descending=True)[: max(1, int(keep * p))]] = True
    return False, head, CountSketch(int((~head).sum()), sketch_dim, seed + 1, ek.dtype)


class EKFACIndex:
    """`kfac.EKFACEigen` streamed: the index is the rotated gradient (float32) when it fits
    `index_budget`, else its `keep` head (largest Λ) plus a count-sketch of the tail; the
    self-influence is exact for the EK-FAC P and computed in the same pass."""

    name = "ekfac-eigen"

    def __init__(self, model: nn.Module, task: inf.Task, damping_ratio: float | None = 0.3,
                 damping: float | None = None, weight_decay_in_curvature: bool = True, fisher: str = "ggn",
                 keep: float = 0.05, sketch_dim: int = 4096, index_budget: int = DEFAULT_BUDGET, dtype=None,
                 batch_size: int = 256, seed: int = 0):
        dtype = dtype or next(model.parameters()).dtype
        self.inner = EKFACEigen(model, task, fisher=fisher, damping_ratio=damping_ratio, damping=damping,
                                weight_decay_in_curvature=weight_decay_in_curvature, dtype=dtype,
                                batch_size=batch_size, seed=seed)
        self.task, self.keep, self.sketch_dim, self.budget, self.seed = task, keep, sketch_dim, index_budget, seed
        self.timings = self.inner.timings

    def fit(self, X: Tensor, y: Tensor) -> EKFACIndex:
        ek = self.inner
        ek.rotated_all = ek.rotated
        ek.rotated = lambda *a, **k: torch.empty(0, ek.p)  # skip its whole-R pass
        ek._build_index = lambda: None
        ek.fit(X, y)
        ek.rotated = ek.rotated_all
        self.n = len(y)
        self.full, self.head, self.sketch = _head_and_sketch(ek, self.n, self.keep, self.sketch_dim, self.budget,
                                                             self.seed)
        features, selfs = [], []
        with _timed(self.timings, "gradients"):
            for lo in range(0, len(y), ek.batch_size):
                R = ek.rotated(X[lo:lo + ek.batch_size], y[lo:lo + ek.batch_size])
                selfs.append((R * R) @ ek.inverse)
                if self.full:
                    features.append(R.float())
                else:
                    features.append(torch.cat([R[:, self.head], self.sketch(R[:, ~self.head])], 1).float())
        self.features, self._self = torch.cat(features), torch.cat(selfs)
        return self

    def scores(self, Xq: Tensor, yq: Tensor) -> Tensor:
        ek = self.inner
        Rq = ek.rotated(Xq, yq, self.task.measurement) * ek.inverse
        if not self.full:
            Rq = torch.cat([Rq[:, self.head], self.sketch(Rq[:, ~self.head])], 1)
        return (Rq.float() @ self.features.T).to(ek.dtype)

    def self_influence(self) -> Tensor:
        return self._self

    def describe(self) -> str:
        ek = self.inner
        damping = f"λ = {ek.ratio:g} × mean eigenvalue" if ek.ratio is not None else f"λ = {ek.damping:g}"
        index = "full rotated gradients" if self.full else f"head {self.keep:g} + count-sketch {self.sketch_dim}"
        return f"{ek.fisher} factors, {damping}, index {index}"


PROTOTYPES = {"exact-jac": ExactJacobian, "lowrank-tail": LowRankTailIndex, "ekfac-eigen": EKFACIndex}


class HybridIndex:
    """Low-rank GGN eigenspace + EK-FAC on its complement (research/hybrid.py), streamed.

        P = U diag(1/(e + wd + λ)) Uᵀ + (I − UUᵀ) P_ek (I − UUᵀ)

    Everything after fit lives in EK-FAC's Kronecker eigenbasis (rotation R(v) = Q_Sᵀ V Q_A per
    layer, orthogonal): U is rotated once (RU: Tensor[r, p]), so Uᵀg = RU R(g). Per training
    example the index keeps R(g) (float32; its `keep` head + count-sketch of the tail when
    n·p·4 > `index_budget`) and h = Uᵀg (r floats). Self-influence, exact for this P:
    Σ_k h_k² d_k + R(g_⊥)ᵀ diag(1/(Λ + wd + λ)) R(g_⊥), with R(g_⊥) = R(g) − hᵀRU.
    Queries: w = (I − UUᵀ) P_ek (I − UUᵀ) q in the rotated basis, score = (h_q·d)ᵀh + ⟨w, R(g)⟩.
    Sign convention: score[j, i] = ∇m(test_j)ᵀ P ∇ℓ(train_i), positive = helpful.
    """

    name = "hybrid"

    def __init__(self, model: nn.Module, task: inf.Task, rank: int = 400, passes: int = 2,
                 damping_ratio: float = 1.0, curvature_rows: int | None = 5000, keep: float = 0.1,
                 sketch_dim: int = 4096, index_budget: int = DEFAULT_BUDGET, dtype=None, batch_size: int = 256,
                 seed: int = 0):
        dtype = dtype or next(model.parameters()).dtype
        self.lowrank = LowRankTail(model, task, rank=rank, passes=passes, damping_ratio=damping_ratio,
                                   curvature_rows=curvature_rows, dtype=dtype, batch_size=batch_size, seed=seed)
        self.ekfac = EKFACEigen(model, task, damping_ratio=damping_ratio, dtype=dtype, batch_size=batch_size,
                                seed=seed)
        self.task, self.ratio, self.keep, self.sketch_dim = task, damping_ratio, keep, sketch_dim
        self.budget, self.seed = index_budget, seed
        self.timings: dict[str, float] = {}

    def _rotate_flat(self, V: Tensor) -> Tensor:
        """Flat-θ rows V: Tensor[m, p] -> the EK-FAC rotated layout (EKFACEigen.rotated's)."""
        from influence.methods.ekfac import find_layers

        layers, _ = find_layers(self.lowrank.factors.fm, skip_unsupported=False)
        ek = self.ekfac
        return torch.cat([(qs.T @ V[:, layer.index] @ qa).reshape(V.shape[0], -1)
                          for layer, qs, qa in zip(layers, ek.QS, ek.QA)], dim=1)

    def fit(self, X: Tensor, y: Tensor) -> HybridIndex:
        lr, ek = self.lowrank, self.ekfac
        start = time.perf_counter()
        lr.index = "none"
        lr.factors.grads = lambda *a, **k: torch.empty(0, lr.factors.p)  # no whole-G pass
        lr.fit(X, y)
        del lr.factors.grads
        self.timings["eigenspace"] = time.perf_counter() - start
        start = time.perf_counter()
        ek.rotated_all, ek.rotated = ek.rotated, (lambda *a, **k: torch.empty(0, ek.p))
        ek._build_index = lambda: None
        ek.fit(X, y)
        ek.rotated = ek.rotated_all
        # one λ for both parts: ratio × the exact mean eigenvalue (trace from the factor pass)
        ek.set_damping(None, lr.damping)
        self.timings["ekfac"] = time.perf_counter() - start
        start = time.perf_counter()
        self.RU = self._rotate_flat(lr.U.T.contiguous())  # [r, p]
        self.d = 1.0 / (lr.e + lr.wd + lr.damping)
        self.inv = ek.inverse
        self.n = len(y)
        self.full, self.head, self.sketch = _head_and_sketch(ek, self.n, self.keep, self.sketch_dim, self.budget,
                                                             self.seed)
        feats, heads, selfs = [], [], []
        for lo in range(0, len(y), ek.batch_size):
            R = ek.rotated(X[lo:lo + ek.batch_size], y[lo:lo + ek.batch_size])
            h = R @ self.RU.T
            perp = R - h @ self.RU
            selfs.append((h * h) @ self.d + (perp * perp) @ self.inv)
            heads.append(h.float())
            feats.append(R.float() if self.full else
                         torch.cat([R[:, self.head], self.sketch(R[:, ~self.head])], 1).float())
        self.features, self.h, self._self = torch.cat(feats), torch.cat(heads), torch.cat(selfs)
        self.timings["gradients"] = time.perf_counter() - start
        return self

    def scores(self, Xq: Tensor, yq: Tensor) -> Tensor:
        ek = self.ekfac
        Rq = ek.rotated(Xq, yq, self.task.measurement)
        hq = Rq @ self.RU.T
        w = (Rq - hq @ self.RU) * self.inv
        w = w - (w @ self.RU.T) @ self.RU
        if not self.full:
            w = torch.cat([w[:, self.head], self.sketch(w[:, ~self.head])], 1)
        return ((hq * self.d).float() @ self.h.T + w.float() @ self.features.T).to(ek.dtype)

    def self_influence(self) -> Tensor:
        return self._self

    def describe(self) -> str:
        lr = self.lowrank
        rows = "all" if lr.curvature_rows is None else f"{lr.curvature_rows}"
        index = "full rotated gradients" if self.full else f"head {self.keep:g} + count-sketch {self.sketch_dim}"
        return (f"top-{lr.rank} GGN eigenspace ({lr.passes} passes on {rows} rows) + EK-FAC tail, "
                f"λ = {self.ratio:g} × mean eigenvalue, index {index} + r")


PROTOTYPES["hybrid"] = HybridIndex
