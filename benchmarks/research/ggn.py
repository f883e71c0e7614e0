"""Curvature candidates built from explicit per-example output-space factors (issue 14, items 1–2).

Notation (every model here is `f(θ, x) ∈ R^C`, θ ∈ R^p, per-example loss ℓ(f, y)):

    J_i = ∂f(x_i)/∂θ                          Tensor[C, p]
    H_i = ∂²ℓ/∂f² = U_i U_iᵀ                  U_i: Tensor[C, K]  (softmax CE: K = C − 1, rank of diag(p) − ppᵀ)
    M_i = U_iᵀ J_i                             Tensor[K, p]       ("output-space factor")
    GGN = (1/n) Σ_i J_iᵀ H_i J_i = (1/n) Σ_i M_iᵀ M_i
    H   = GGN + wd·I                           (the curvature of the mean loss + (wd/2)‖θ‖²)
    g_i = ∇ℓ(train_i) = J_iᵀ ∂ℓ/∂f             q_j = ∇m(test_j) = J_jᵀ ∂m/∂f

Sign convention of every score (the package's):

    score[j, i] = q_jᵀ (H + λI)⁻¹ g_i          positive = helpful (removing train_i raises the test loss)
    self_influence[i] = g_iᵀ (H + λI)⁻¹ g_i

Damping λ = ratio × mean eigenvalue of H; the mean eigenvalue is exact and free here:
trace(H)/p = (‖M‖_F²/n + wd·p)/p, accumulated in the factor pass.

Candidates:
- `ExactGGN`: H built as one [nK, p]ᵀ[nK, p] accumulation (K backward passes per batch, no
  Hessian-vector products), factorised once (Cholesky for one damping, or eigh when many
  dampings are wanted); queries and self-influence are matrix products.
- `LowRankTail`: top-r eigenpairs (U, e) of the GGN by randomized Nyström with power iterations
  over the streamed factors (`passes` passes, each Σ_i M_iᵀ(M_i V)), and one tail eigenvalue for the
  rest, e_tail = (trace(GGN) − Σe)/(p − r) ("mean", trace exact) or 0 ("zero"):

      P = U diag(1/(e + wd + λ)) Uᵀ + (I − UUᵀ) / (e_tail + wd + λ)

  Self-influence is exact for that P from g alone: Σ_k (u_kᵀg)² d_k + (‖g‖² − ‖Uᵀg‖²) d_tail.
  Pairwise scores use an index: the full g ("full", n×p) or [Uᵀg (r dims), S(g − UUᵀg) (k dims)]
  with S a k×p Gaussian sketch / √k ("sketch"), so q P g ≈ (Uᵀq)ᵀD(Uᵀg) + d_tail (Sq_⊥)ᵀ(Sg_⊥).

These are research prototypes (benchmarks/, not the library): generic through `torch.func`
(any model whose outputs are [b, C]); the library versions would use layer hooks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import torch
from torch import Tensor, nn

import influence as inf
from influence.model import FunctionalModel


# ---------------------------------------------------------------------------- per-example factors
def output_hessian_sqrt(task: inf.Task, outputs: Tensor, targets: Tensor) -> Tensor:
    """U: Tensor[b, C, K] with U Uᵀ = ∂²ℓ/∂f² per example (K = C − 1 for softmax CE, else C).

    For `ClassificationTask` the closed form diag(p) − ppᵀ is eigendecomposed per example
    (a [b, C, C] batched eigh; its one zero eigenvalue is dropped)."""
    b, C = outputs.shape
    eye = torch.eye(C, dtype=outputs.dtype, device=outputs.device)
    H = task.output_hessian_vp(outputs.detach(), targets, eye[:, None, :].expand(C, b, C)).permute(1, 0, 2)
    w, V = torch.linalg.eigh(0.5 * (H + H.transpose(1, 2)))
    if isinstance(task, inf.ClassificationTask) and C > 1:
        w, V = w[:, 1:], V[:, :, 1:]  # the softmax Hessian has rank C − 1 (null vector: all ones)
    return V * w.clamp_min(0).sqrt()[:, None, :]


class Factors:
    """Per-example Jacobians and what is built from them, batch by batch.

    `batches(X, y, fn)` yields (M [b, K, p], g [b, p]) where g is ∇fn (fn = task.loss or
    task.measurement) — both from one Jacobian J [b, C, p] (C backward passes per batch).
    """

    def __init__(self, model: nn.Module, task: inf.Task, batch_size: int = 128):
        self.fm = FunctionalModel(model, task.parameters)
        self.task = task
        self.batch_size = batch_size
        fm = self.fm

        def single(theta: Tensor, x: Tensor) -> Tensor:
            return fm(theta, x[None])[0]

        self._jac = torch.func.vmap(torch.func.jacrev(single), in_dims=(None, 0))

    @property
    def p(self) -> int:
        return self.fm.p

    def jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.fm.dtype)
        with torch.no_grad():
            outputs = self.fm(self.fm.theta, x)
        return self._jac(self.fm.theta, x), outputs

    def output_grad(self, fn, outputs: Tensor, y: Tensor) -> Tensor:
        """∂fn/∂f per example: Tensor[b, C]."""
        return torch.func.vmap(torch.func.grad(lambda o, t: fn(o[None], t[None]).sum()))(outputs, y)

    def batches(self, X: Tensor, y: Tensor, fn=None, factors: bool = True, grads: bool = True
                ) -> Iterator[tuple[Tensor | None, Tensor | None]]:
        fn = self.task.loss if fn is None else fn
        for lo in range(0, len(y), self.batch_size):
            x, t = X[lo:lo + self.batch_size], y[lo:lo + self.batch_size]
            J, outputs = self.jacobian(x)
            M = torch.einsum("bck,bcp->bkp", output_hessian_sqrt(self.task, outputs, t), J) if factors else None
            g = torch.einsum("bc,bcp->bp", self.output_grad(fn, outputs, t), J) if grads else None
            yield M, g

    def grads(self, X: Tensor, y: Tensor, fn=None) -> Tensor:
        """Tensor[n, p] of per-example gradients of fn (default: the training loss)."""
        if fn is None:
            fn = self.task.loss
        return torch.cat([g for _, g in self.batches(X, y, fn, factors=False)])


def damping_value(ratio: float, mean_eigenvalue: float) -> float:
    return ratio * mean_eigenvalue


# ---------------------------------------------------------------------------- candidate 1
class ExactGGN:
    """Exact GGN (+ wd·I) from per-example output-space factors, factorised once.

    fit: one pass: A = Σ_i M_iᵀ M_i (Tensor[p, p]) and, when `store_grads`, the train
    gradients G (Tensor[n, p], the index). H = A/n + wd·I. `solver="cholesky"` factorises
    H + λI for the chosen damping; `solver="eigh"` eigendecomposes H once so that
    `set_damping` is free (sweeps; ~10–30× slower than Cholesky on CPU).

    scores(Xq, yq) -> Tensor[n_q, n]: (P Q)ᵀ G with Q the measurement gradients.
    self_influence() -> Tensor[n]: rowwise gᵀ P g.
    """

    def __init__(self, model: nn.Module, task: inf.Task, damping_ratio: float = 0.3, solver: str = "cholesky",
                 dtype: torch.dtype = torch.float64, batch_size: int = 128, weight_decay_in_curvature: bool = True):
        self.factors = Factors(model, task, batch_size)
        self.task, self.ratio, self.solver, self.dtype = task, damping_ratio, solver, dtype
        self.wd = task.weight_decay if weight_decay_in_curvature else 0.0
        self.timings: dict[str, float] = {}

    def fit(self, X: Tensor, y: Tensor) -> ExactGGN:
        start = time.perf_counter()
        p = self.factors.p
        A = torch.zeros(p, p, dtype=self.dtype)
        G = []
        for M, g in self.factors.batches(X, y):
            M = M.reshape(-1, p).to(self.dtype)
            A.addmm_(M.T, M)
            G.append(g.to(self.dtype))
        self.n = len(y)
        self.G = torch.cat(G)
        self.A = A / self.n
        self.trace_ggn = float(self.A.diagonal().sum())
        self.mean_eigenvalue = (self.trace_ggn + self.wd * p) / p
        self.timings["factors"] = time.perf_counter() - start
        start = time.perf_counter()
        if self.solver == "eigh":
            self.e, self.Q = torch.linalg.eigh(self.A)
        self.set_damping(self.ratio)
        self.timings["factorise"] = time.perf_counter() - start
        return self

    def set_damping(self, ratio: float, absolute: float | None = None) -> None:
        """λ = ratio × mean eigenvalue of H (or `absolute`); refactorises (Cholesky) or reweights (eigh)."""
        self.ratio = ratio
        self.damping = absolute if absolute is not None else damping_value(ratio, self.mean_eigenvalue)
        shift = self.wd + self.damping
        if self.solver == "eigh":
            self.inverse = 1.0 / (self.e.clamp_min(0) + shift)
        else:
            H = self.A.clone()
            H.diagonal().add_(shift)
            self.L = torch.linalg.cholesky(H)

    def precondition(self, V: Tensor) -> Tensor:
        """P V for V: Tensor[m, p] (rows are gradients)."""
        V = V.to(self.dtype)
        if self.solver == "eigh":
            return ((V @ self.Q) * self.inverse) @ self.Q.T
        return torch.cholesky_solve(V.T, self.L).T

    def whiten(self, V: Tensor) -> Tensor:
        """W V with WᵀW = P (rowwise), so gᵀPg = ‖Wg‖²."""
        V = V.to(self.dtype)
        if self.solver == "eigh":
            return (V @ self.Q) * self.inverse.sqrt()
        return torch.linalg.solve_triangular(self.L, V.T, upper=False).T

    def scores(self, Xq: Tensor, yq: Tensor) -> Tensor:
        Q = self.factors.grads(Xq, yq, self.task.measurement)
        return self.precondition(Q) @ self.G.T

    def self_influence(self, block: int = 4096) -> Tensor:
        if self.solver == "eigh":  # (Qᵀg)² once; every damping is then one [n, p] @ [p] product
            if getattr(self, "_rotated_sq", None) is None:
                self._rotated_sq = torch.cat([(self.G[lo:lo + block] @ self.Q) ** 2 for lo in range(0, self.n, block)])
            return self._rotated_sq @ self.inverse
        return torch.cat([(self.whiten(self.G[lo:lo + block]) ** 2).sum(1) for lo in range(0, self.n, block)])


# ---------------------------------------------------------------------------- candidate 2
def orthonormalize(Y: Tensor) -> Tensor:
    return torch.linalg.qr(Y, mode="reduced")[0]


class LowRankTail:
    """Top-r GGN eigenpairs + one tail eigenvalue (see the module docstring for P).

    Args:
        rank: r. oversample: extra columns of the sketch (dropped after Rayleigh–Ritz).
        passes: passes over the factors (products with the GGN): 1 = randomized Nyström
            from one sketch; each extra pass is a power (subspace) iteration before it.
        tail: "mean" (e_tail = (trace − Σe)/(p − r)), "zero", or "diag" (per-coordinate:
            diag(GGN − U diag(e) Uᵀ); P's tail is then (I − UUᵀ) diag(1/(t + wd + λ)) (I − UUᵀ)).
        index: "full" (store g, n×p) or "sketch" (r + sketch_dim dims per example).
        sketch_dim: k of the residual sketch (index="sketch").
        curvature_rows: fit the eigenspace on this many training examples (a fixed random
            subset; None = all), as `curvature_samples` in the library.
    """

    def __init__(self, model: nn.Module, task: inf.Task, rank: int = 200, oversample: int = 20, passes: int = 2,
                 tail: str = "mean", damping_ratio: float = 0.3, index: str = "full", sketch_dim: int = 2048,
                 curvature_rows: int | None = None, batch_size: int = 128, dtype: torch.dtype = torch.float64,
                 weight_decay_in_curvature: bool = True, seed: int = 0, sampled_rows: bool = False):
        self.factors = Factors(model, task, batch_size)
        self.sampled_rows = sampled_rows
        self.task, self.rank, self.oversample, self.passes = task, rank, oversample, passes
        self.tail, self.ratio, self.index, self.sketch_dim = tail, damping_ratio, index, sketch_dim
        self.curvature_rows, self.dtype, self.seed = curvature_rows, dtype, seed
        self.wd = task.weight_decay if weight_decay_in_curvature else 0.0
        self.timings: dict[str, float] = {}

    def _rows(self, X: Tensor, y: Tensor):
        """Blocks of factor rows whose Gram is n·GGN: the exact K rows per example, or with
        `sampled_rows` one per-example gradient at a label drawn from the model (drawn once,
        so every pass sees the same operator): E[g̃g̃ᵀ] = GGN for softmax CE, K = 1, and one
        per-example gradient pass instead of C backward passes per batch."""
        if not self.sampled_rows:
            for M, _ in self.factors.batches(X, y, grads=False):
                yield M.reshape(-1, self.factors.p)
            return
        if getattr(self, "_labels", None) is None or len(self._labels) != len(y):
            gen = torch.Generator().manual_seed(self.seed + 7)
            with torch.no_grad():
                probs = torch.softmax(self.factors.fm(self.factors.fm.theta, X.to(self.factors.fm.dtype)), 1)
            self._labels = torch.multinomial(probs.double().cpu(), 1, generator=gen).flatten()
        from influence.gradients import per_example_grads

        for lo in range(0, len(y), self.factors.batch_size):
            yield per_example_grads(self.factors.fm, self.task.loss, X[lo:lo + self.factors.batch_size],
                                    self._labels[lo:lo + self.factors.batch_size])

    def _ggn_product(self, X: Tensor, y: Tensor, V: Tensor) -> tuple[Tensor, float]:
        """(GGN V, trace(GGN)) for V: Tensor[p, m], one pass over the factors; keeps diag(GGN)
        in `self.diagonal` (for tail="diag")."""
        out = torch.zeros_like(V)
        diagonal = torch.zeros(self.factors.p, dtype=self.dtype)
        for M in self._rows(X, y):
            M = M.to(self.dtype)
            out.addmm_(M.T, M @ V)
            diagonal += (M * M).sum(0)
        self.diagonal = diagonal / len(y)
        return out / len(y), float(self.diagonal.sum())

    def fit(self, X: Tensor, y: Tensor) -> LowRankTail:
        start = time.perf_counter()
        p = self.factors.p
        gen = torch.Generator().manual_seed(self.seed)
        Xc, yc = X, y
        if self.curvature_rows is not None and self.curvature_rows < len(y):
            rows = torch.randperm(len(y), generator=gen)[: self.curvature_rows]
            Xc, yc = X[rows], y[rows]
        m = min(self.rank + self.oversample, p)
        omega = orthonormalize(torch.randn(p, m, generator=gen, dtype=self.dtype))
        for _ in range(self.passes - 1):  # power iterations sharpen the captured subspace
            omega = orthonormalize(self._ggn_product(Xc, yc, omega)[0])
        Y, trace = self._ggn_product(Xc, yc, omega)
        # randomized Nyström (Tropp et al. 2017, Alg. 3): GGN ≈ Y (ΩᵀY)⁻¹ Yᵀ, stabilised by a shift ν
        nu = math.sqrt(p) * torch.finfo(self.dtype).eps * float(Y.norm())
        Y_nu = Y + nu * omega
        C = torch.linalg.cholesky(0.5 * (omega.T @ Y_nu + Y_nu.T @ omega))
        B = torch.linalg.solve_triangular(C, Y_nu.T, upper=False).T  # Y_ν C⁻ᵀ
        U, sigma, _ = torch.linalg.svd(B, full_matrices=False)
        self.e, self.U = (sigma[: self.rank] ** 2 - nu).clamp_min(0), U[:, : self.rank]
        self.trace_ggn = trace
        self.e_tail = self._tail_value(self.e, self.U)
        self.mean_eigenvalue = (trace + self.wd * p) / p
        self.timings["eigenspace"] = time.perf_counter() - start
        start = time.perf_counter()
        self.set_damping(self.ratio)
        self.n = len(y)
        self.G = self.factors.grads(X, y).to(self.dtype)  # one gradient pass
        if self.index == "sketch":
            self.S = torch.randn(self.sketch_dim, p, generator=gen, dtype=self.dtype) / math.sqrt(self.sketch_dim)
            self.features = self._features(self.G)
        self.timings["gradients"] = time.perf_counter() - start
        return self

    def _tail_value(self, e: Tensor, U: Tensor) -> float | Tensor:
        """The tail eigenvalue: a scalar for "mean" / "zero"; for "diag" a vector [p], the
        diagonal of GGN − U diag(e) Uᵀ clamped at 0 (a per-coordinate tail, cheap: diag(GGN)
        comes with the factor pass)."""
        p, r = self.factors.p, U.shape[1]
        if self.tail == "mean":
            return max((self.trace_ggn - float(e.sum())) / max(p - r, 1), 0.0)
        if self.tail == "diag":
            return (self.diagonal - (U * U) @ e).clamp_min(0)
        return 0.0

    def truncate(self, rank: int) -> LowRankTail:
        """A copy keeping the top `rank` eigenpairs (tail recomputed from the exact trace):
        what a rank-`rank` fit would give with a perfectly captured subspace."""
        import copy

        other = copy.copy(self)
        other.rank, other.e, other.U = rank, self.e[:rank], self.U[:, :rank]
        other.e_tail = other._tail_value(other.e, other.U)
        other.set_damping(self.ratio, None)
        if self.index == "sketch":
            other.features = other._features(self.G)
        return other

    def set_damping(self, ratio: float, absolute: float | None = None) -> None:
        self.ratio = ratio
        self.damping = absolute if absolute is not None else damping_value(ratio, self.mean_eigenvalue)
        self.d = 1.0 / (self.e + self.wd + self.damping)
        self.d_tail = 1.0 / (self.e_tail + self.wd + self.damping)

    def _features(self, G: Tensor) -> Tensor:
        """[Uᵀg, S(g − UUᵀg)]: Tensor[m, r + k]."""
        head = G @ self.U
        return torch.cat([head, (G - head @ self.U.T) @ self.S.T], dim=1)

    def precondition(self, V: Tensor) -> Tensor:
        V = V.to(self.dtype)
        head = V @ self.U
        rest = V - head @ self.U.T
        if isinstance(self.d_tail, Tensor):  # diag tail: (I − UUᵀ) D_t (I − UUᵀ)
            rest = rest * self.d_tail
            rest = rest - (rest @ self.U) @ self.U.T
        else:
            rest = self.d_tail * rest
        return (head * self.d) @ self.U.T + rest

    def scores(self, Xq: Tensor, yq: Tensor) -> Tensor:
        Q = self.factors.grads(Xq, yq, self.task.measurement).to(self.dtype)
        if self.index == "full":
            return self.precondition(Q) @ self.G.T
        r = self.U.shape[1]
        fq = self._features(Q)
        weights = torch.cat([self.d, torch.full((fq.shape[1] - r,), self.d_tail, dtype=self.dtype)])
        return (fq * weights) @ self.features.T

    def self_influence(self) -> Tensor:
        head = self.G @ self.U
        if isinstance(self.d_tail, Tensor):
            rest = self.G - head @ self.U.T
            return (head * head) @ self.d + (rest * rest) @ self.d_tail
        rest = (self.G * self.G).sum(1) - (head * head).sum(1)
        return (head * head) @ self.d + self.d_tail * rest.clamp_min(0)
