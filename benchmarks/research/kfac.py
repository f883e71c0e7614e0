"""EK-FAC / K-FAC with every per-example quantity kept in the Kronecker eigenbasis (issue 14, items 3–4).

Per `nn.Linear` / `nn.Conv2d` layer l (bias appended as a last input column), with ã the
layer inputs Tensor[b, T, d_in] (T = 1 for Linear, the unfolded patches for Conv2d) and δ
the gradients of the layer outputs Tensor[b, T, d_out]:

    A = (1/(nT)) Σ_i Σ_t ã ãᵀ = Q_A diag(a) Q_Aᵀ
    S = (1/n) Σ_i Σ_c Σ_t δ_c δ_cᵀ = Q_S diag(s) Q_Sᵀ        (c: factor columns, see `fisher`)
    R_i = Q_Sᵀ G_i Q_A = Σ_t (Q_Sᵀ δ_t)(Q_Aᵀ ã_t)ᵀ            Tensor[d_out, d_in], G_i the per-example gradient
    EK-FAC: Λ = (1/n) Σ_i Σ_c R_ic ⊙ R_ic;   K-FAC: Λ = s aᵀ
    P = blockdiag_l  Q (1/(Λ + wd + λ)) Qᵀ

`fisher`: "ggn" (δ_c back-propagated from the K columns of the output-Hessian square root:
the exact GGN, as influence/methods/ekfac.py), "sampled" (one label drawn from the model per
example: the true Fisher estimated as Kronfluence does), "empirical" (the training labels).
`weight_decay_in_curvature=False` and `damping_ratio=None, damping=1e-8` reproduce
Kronfluence's defaults (no L2 term, λ = 1e-8).

Sign convention (the package's): score[j, i] = Σ_l ⟨R(q_j), R(g_i)⟩_{1/(Λ+wd+λ)} =
q_jᵀ P g_i, positive = helpful; self_influence[i] = g_iᵀ P g_i.

Index: R(g_i) for every layer, never the flat gradient. `keep` < 1 keeps only that fraction
of the rotated coordinates with the largest Λ (global threshold over layers, the head) and
either drops the rest (`tail="drop"`) or count-sketches it to `sketch_dim` buckets
(`tail="sketch"`; the tail weight 1/(Λ+wd+λ) is applied before sketching on the query side
only, so the train-side tail features are weight-free). Self-influence is computed from
the full R (exact for this P) in the same pass.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import influence as inf
from ggn import output_hessian_sqrt


class _Layer:
    def __init__(self, module: nn.Module):
        self.module = module
        self.has_bias = module.bias is not None

    def inputs(self, a: Tensor) -> Tensor:
        m = self.module
        if isinstance(m, nn.Conv2d):
            a = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride).transpose(1, 2)
        else:
            a = a.reshape(a.shape[0], -1, a.shape[-1])
        return torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=2) if self.has_bias else a

    def output_grads(self, g: Tensor) -> Tensor:
        if isinstance(self.module, nn.Conv2d):
            return g.flatten(2).transpose(1, 2)
        return g.reshape(g.shape[0], -1, g.shape[-1])


class EKFACEigen:
    """Block-diagonal (E)K-FAC over the Linear/Conv2d layers, features in its eigenbasis.

    Args:
        model, task: the trained model (every parameter must live in a Linear/Conv2d) and task.
        correct: True = EK-FAC eigenvalues, False = K-FAC (s ⊗ a).
        fisher: "ggn" | "sampled" | "empirical" (see the module docstring).
        damping_ratio: λ = ratio × mean eigenvalue of the approximated curvature
            (trace(Λ)/p + wd; exact GGN trace when fisher="ggn"); ignored when `damping` is given.
        damping: absolute λ.
        keep, tail, sketch_dim: index truncation (module docstring).
        batch_size: examples per pass step. seed: label sampling and sketch hashing.
    """

    def __init__(self, model: nn.Module, task: inf.Task, correct: bool = True, fisher: str = "ggn",
                 damping_ratio: float | None = 0.3, damping: float | None = None,
                 weight_decay_in_curvature: bool = True, keep: float = 1.0, tail: str = "sketch",
                 sketch_dim: int = 2048, batch_size: int = 256, dtype: torch.dtype = torch.float64, seed: int = 0):
        self.model, self.task = model, task
        self.correct, self.fisher = correct, fisher
        self.ratio, self.absolute = damping_ratio, damping
        self.wd = task.weight_decay if weight_decay_in_curvature else 0.0
        self.keep, self.tail, self.sketch_dim = keep, tail, sketch_dim
        self.batch_size, self.dtype, self.seed = batch_size, dtype, seed
        self.layers = [_Layer(m) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        covered = sum(sum(p.numel() for p in l.module.parameters()) for l in self.layers)
        self.p = sum(p.numel() for p in model.parameters())
        if covered != self.p:
            raise ValueError("EKFACEigen needs every parameter inside an nn.Linear / nn.Conv2d")
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ one forward/backward step
    def _capture(self, x: Tensor):
        captured = {}

        def hook(i):
            def record(module, args, output):
                captured[i] = (args[0].detach(), output)
            return record

        handles = [l.module.register_forward_hook(hook(i)) for i, l in enumerate(self.layers)]
        try:
            with torch.enable_grad():
                out = self.model(x.to(self.dtype))
        finally:
            for h in handles:
                h.remove()
        acts = [l.inputs(captured[i][0]) for i, l in enumerate(self.layers)]
        outs = [captured[i][1] for i in range(len(self.layers))]
        return out, acts, outs

    def _backprop(self, out: Tensor, outs: list[Tensor], grad_out: Tensor) -> list[Tensor]:
        gs = torch.autograd.grad(out, outs, grad_out, retain_graph=True, allow_unused=True)
        return [l.output_grads(torch.zeros_like(o) if g is None else g) for l, o, g in zip(self.layers, outs, gs)]

    def _curvature_columns(self, out: Tensor, y: Tensor, gen: torch.Generator) -> list[Tensor]:
        """Output-space vectors whose back-propagation gives the pseudo-gradients δ_c: [b, C] each."""
        if self.fisher == "ggn":
            U = output_hessian_sqrt(self.task, out.detach(), y)  # [b, C, K]
            return [U[:, :, c] for c in range(U.shape[2])]
        if self.fisher == "sampled":
            with torch.no_grad():
                probs = torch.softmax(out.detach(), dim=1)
                labels = torch.multinomial(probs.float().cpu(), 1, generator=gen).flatten()
        else:
            labels = y
        return [self._loss_output_grad(out, labels)]

    def _loss_output_grad(self, out: Tensor, y: Tensor, fn=None) -> Tensor:
        fn = self.task.loss if fn is None else fn
        o = out.detach().requires_grad_(True)
        with torch.enable_grad():
            return torch.autograd.grad(fn(o, y).sum(), o)[0]

    def _steps(self, X: Tensor, y: Tensor):
        for lo in range(0, len(y), self.batch_size):
            yield X[lo:lo + self.batch_size], y[lo:lo + self.batch_size]

    # ------------------------------------------------------------------ fit
    def fit(self, X: Tensor, y: Tensor) -> EKFACEigen:
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(self.seed)
        n = len(y)
        A = [0.0] * len(self.layers)
        S = [0.0] * len(self.layers)
        for x, t in self._steps(X, y):
            out, acts, outs = self._capture(x)
            for col in self._curvature_columns(out, t, gen):
                for i, g in enumerate(self._backprop(out, outs, col)):
                    S[i] = S[i] + torch.einsum("bto,btp->op", g, g)
            for i, a in enumerate(acts):
                A[i] = A[i] + torch.einsum("bti,btj->ij", a, a) / a.shape[1]
        self.QA, self.QS, self.Lam = [], [], []
        for a, s in zip(A, S):
            (ea, qa), (es, qs) = torch.linalg.eigh(a / n), torch.linalg.eigh(s / n)
            self.QA.append(qa)
            self.QS.append(qs)
            self.Lam.append(torch.outer(es.clamp_min(0), ea.clamp_min(0)))
        self.timings["factors"] = time.perf_counter() - start
        start = time.perf_counter()
        if self.correct:
            gen = torch.Generator().manual_seed(self.seed)
            Lam = [torch.zeros_like(l) for l in self.Lam]
            for x, t in self._steps(X, y):
                out, acts, outs = self._capture(x)
                rot = [a @ qa for a, qa in zip(acts, self.QA)]
                for col in self._curvature_columns(out, t, gen):
                    for i, g in enumerate(self._backprop(out, outs, col)):
                        R = torch.einsum("bto,btk->bok", g @ self.QS[i], rot[i])
                        Lam[i] += (R * R).sum(0)
            self.Lam = [l / n for l in Lam]
        self.timings["eigenvalues"] = time.perf_counter() - start
        self.trace = float(sum(l.sum() for l in self.Lam))
        self.mean_eigenvalue = self.trace / self.p + self.wd
        self.set_damping(self.ratio, self.absolute)
        start = time.perf_counter()
        self.R = self.rotated(X, y)  # the index (research: kept whole, truncation applied on read)
        self.n = n
        self._build_index()
        self.timings["gradients"] = time.perf_counter() - start
        return self

    def set_damping(self, ratio: float | None, absolute: float | None = None) -> None:
        self.ratio = ratio
        self.damping = absolute if absolute is not None else ratio * self.mean_eigenvalue
        self.inverse = torch.cat([1.0 / (l.reshape(-1) + self.wd + self.damping) for l in self.Lam])
        if hasattr(self, "R"):
            self._build_index()

    def rotated(self, X: Tensor, y: Tensor, fn=None) -> Tensor:
        """Tensor[n, p]: the per-example gradients of fn (default the loss) in the eigenbasis,
        layer after layer (each flattened [d_out, d_in])."""
        rows = []
        for x, t in self._steps(X, y):
            out, acts, outs = self._capture(x)
            grads = self._backprop(out, outs, self._loss_output_grad(out, t, fn))
            rows.append(torch.cat([torch.einsum("bto,btk->bok", g @ qs, a @ qa).reshape(len(t), -1)
                                   for g, a, qs, qa in zip(grads, acts, self.QS, self.QA)], dim=1))
        return torch.cat(rows)

    # ------------------------------------------------------------------ index and queries
    def _build_index(self) -> None:
        lam = torch.cat([l.reshape(-1) for l in self.Lam])
        if self.keep >= 1.0:
            self.head = torch.ones(self.p, dtype=torch.bool)
        else:
            k = max(1, int(round(self.keep * self.p)))
            self.head = torch.zeros(self.p, dtype=torch.bool)
            self.head[lam.argsort(descending=True)[:k]] = True
        if self.keep < 1.0 and self.tail == "sketch":
            gen = torch.Generator().manual_seed(self.seed + 1)
            tail = int((~self.head).sum())
            self.bucket = torch.randint(0, self.sketch_dim, (tail,), generator=gen)
            self.sign = torch.randint(0, 2, (tail,), generator=gen).to(self.dtype) * 2 - 1
            self.train_tail = self._sketch(self.R[:, ~self.head])

    def _sketch(self, V: Tensor) -> Tensor:
        out = torch.zeros(V.shape[0], self.sketch_dim, dtype=V.dtype)
        return out.index_add_(1, self.bucket, V * self.sign)

    @property
    def feature_dim(self) -> int:
        return int(self.head.sum()) + (self.sketch_dim if self.keep < 1.0 and self.tail == "sketch" else 0)

    def scores(self, Xq: Tensor, yq: Tensor) -> Tensor:
        Rq = self.rotated(Xq, yq, self.task.measurement) * self.inverse
        out = Rq[:, self.head] @ self.R[:, self.head].T
        if self.keep < 1.0 and self.tail == "sketch":
            out += self._sketch(Rq[:, ~self.head]) @ self.train_tail.T
        return out

    def self_influence(self) -> Tensor:
        return (self.R * self.R) @ self.inverse
