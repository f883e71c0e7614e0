"""Curvature of the mean training objective, as matrix-vector products.

`Curvature.matvec(V)` returns `(C + weight_decay·I) V` for a block of directions
V: Tensor[k, p], where C is either

- the Hessian `(1/n) Σ_i ∇²_θ loss_i`, or
- the Gauss-Newton matrix (GGN) `(1/n) Σ_i J_iᵀ H_out,i J_i`, with J_i the Jacobian of the
  outputs and H_out,i the Hessian of the loss w.r.t. the outputs.

The GGN is positive semi-definite for convex losses and is the safe default off convex
models (a trained network's Hessian has negative eigenvalues). For a model whose outputs
are affine in θ the two are equal. All products use `torch.func` and work for any
`nn.Module`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from influence.batching import concat, from_state, take, to_model, to_state, unsqueeze
from influence.data import ExampleData
from influence.errors import InvalidArgumentError
from influence.gradients import check_targets, map_examples
from influence.head import LinearHeadProducts, find_linear_head
from influence.model import FunctionalModel
from influence.progress import phase
from influence.solvers.lanczos import top_eigenpairs
from influence.task import Task

CURVATURES = ("ggn", "hessian")
# The dense GGN goes through the output Hessian's factor up to this many outputs per example,
# through output-Hessian products above (a language model's tokens × vocabulary).
FACTOR_MAX_OUTPUTS = 256
FUSED_HEAD = "fused linear head (kernels.ce_head_hvp)"


class Curvature:
    """Matrix-free curvature of the mean training loss plus its L2 regulariser.

    Args:
        fm: the model as a function of the flat attributed parameters (p of them).
        task: defines the loss, its output Hessian and `weight_decay`.
        data: the training examples (all of them, or a subsample for large sets).
        kind: "ggn" or "hessian".
        batch_size: examples per product chunk (bounds memory; results do not depend on it
            beyond floating-point summation order). The inputs are held in memory, so pass
            a subsample when the training inputs do not fit.
        fused_head: when only a linear softmax head is attributed, use the fused
            `kernels.ce_head_hvp` products (see `influence.head`); same result, faster.
    """

    def __init__(self, fm: FunctionalModel, task: Task, data: ExampleData, kind: str = "ggn",
                 batch_size: int = 512, fused_head: bool = True, progress: bool = False):
        if kind not in CURVATURES:
            raise InvalidArgumentError(f"curvature must be one of {list(CURVATURES)}, got {kind!r}")
        self.fm, self.task, self.kind, self.progress = fm, task, kind, progress
        self.n = len(data)
        self.batch_size = batch_size
        chunks = [(x, y) for _, x, y in data.batches(batch_size)]
        self._inputs = to_model(concat([c[0] for c in chunks]), fm.device, fm.dtype)
        self._targets = torch.cat([c[1] for c in chunks]).to(fm.device)
        for inputs, targets in self.batches():  # a clear error before any product, whatever runs first
            check_targets(fm, task, inputs, targets, data.argument)
        self._fused_head, self._head = fused_head, None
        self._ran: dict[str, None] = {}  # the product paths that actually ran, for `backend`

    @property
    def head(self) -> LinearHeadProducts | None:
        """The fused products of an attributed linear softmax head (for a linear head the GGN
        equals the Hessian, so either kind applies), or None. Built on first use — its
        forward pass over the curvature data is skipped by methods that need no products."""
        if self._fused_head and self._head is None:
            self._fused_head = False  # look once
            name = find_linear_head(self.fm, self.task)
            if name is not None:
                try:
                    weight_decay = self.task.weight_decay
                    self._head = LinearHeadProducts(self.fm, name, self._inputs, weight_decay)
                except LookupError:
                    self._head = None
        return self._head

    @property
    def backend(self) -> str:
        """The product paths that have run so far (the fused head kernel, torch.func products,
        per-example Jacobians), or that none did (e.g. EK-FAC factors its own curvature)."""
        return ", ".join(self._ran) or "none (the method needed no curvature products)"

    def batches(self, desc: str | None = None, limit: int | None = None):
        """Yield `(inputs, targets)` of the curvature data in chunks of `batch_size` (a pass named
        `desc` shows a progress bar when `progress`); with `limit`, of a fixed random subset of
        that many examples (the same one every time)."""
        rows = torch.arange(self.n)
        if limit is not None and limit < self.n:
            rows = torch.randperm(self.n, generator=torch.Generator().manual_seed(0))[:limit].sort().values
        with phase(desc or "", len(rows), enabled=self.progress and desc is not None) as bar:
            for chunk in rows.to(self._targets.device).split(self.batch_size):
                index = chunk if len(rows) < self.n else slice(int(chunk[0]), int(chunk[-1]) + 1)
                yield take(self._inputs, index), self._targets[index]
                bar.update(len(chunk))

    def state_dict(self) -> dict[str, Tensor]:
        """The curvature data (inputs and targets), so an index can answer queries without
        going back to the training set."""
        return {**to_state(self._inputs, "curvature_inputs"), "curvature_targets": self._targets}

    @classmethod
    def from_state(cls, fm: FunctionalModel, task: Task, state: dict[str, Tensor], kind: str,
                   batch_size: int = 512) -> Curvature:
        inputs, targets = from_state(state, "curvature_inputs"), state["curvature_targets"]
        data = ExampleData(None, len(targets), lambda idx: (take(inputs, idx), targets[idx]), "curvature data")
        return cls(fm, task, data, kind, batch_size)

    @property
    def p(self) -> int:
        return self.fm.p

    @property
    def positive_semidefinite(self) -> bool:
        """True when no eigenvalue can be negative: the GGN (or, for a linear head, the equal
        Hessian) of a loss convex in the outputs. The Hessian of a network can be indefinite."""
        return (self.kind == "ggn" or self.head is not None) and bool(getattr(self.task, "convex_loss", False))

    def extreme_eigenvalues(self, steps: int = 30, seed: int = 0) -> tuple[float, float]:
        """Lanczos estimates `(smallest, largest)` of the eigenvalues of C + weight_decay·I:
        the extreme Ritz values of a `steps`-dimensional Krylov space (exact when steps >= p).
        Ritz values lie inside the spectrum, so the smallest estimate is never below the
        true smallest."""
        steps = min(steps, self.p)
        values = top_eigenpairs(self.matvec, self.p, steps, steps, block_size=1, seed=seed, dtype=self.fm.dtype,
                                device=self.fm.device)[0]
        return float(values.min()), float(values.max())

    def matvec(self, V: Tensor) -> Tensor:
        """(C + weight_decay·I) V for V: Tensor[k, p] (or Tensor[p]); same shape out."""
        single = V.ndim == 1
        V = V.reshape(-1, self.p).to(self.fm.dtype)
        if self.head is not None:
            self._ran[FUSED_HEAD] = None
            out = self.head.matvec(V)
            return out[0] if single else out
        out = torch.zeros_like(V)
        product = self._ggn_block if self.kind == "ggn" else self._hessian_block
        self._ran[f"torch.func {self.kind}"] = None
        for x, y in self.batches():
            out += product(x, y, V)
        out = out / self.n + self.task.weight_decay * V
        return out[0] if single else out

    def minibatch_matvec(self, V: Tensor, batch_size: int, seed: int) -> Tensor:
        """Unbiased estimate of `(C + weight_decay·I) V` from `batch_size` random examples."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        rows = torch.randperm(self.n, generator=gen)[:batch_size].to(self.fm.device)
        product = self._ggn_block if self.kind == "ggn" else self._hessian_block
        self._ran[f"torch.func {self.kind}"] = None
        return product(take(self._inputs, rows), self._targets[rows], V) / len(rows) + self.task.weight_decay * V

    def _ggn_block(self, x: Tensor, y: Tensor, V: Tensor) -> Tensor:
        f = lambda th: self.fm(th, x)
        outputs, vjp_fn = torch.func.vjp(f, self.fm.theta)
        jv = torch.func.vmap(lambda v: torch.func.jvp(f, (self.fm.theta,), (v,))[1])(V)
        hjv = self.task.output_hessian_vp(outputs.detach(), y, jv)
        return torch.func.vmap(lambda u: vjp_fn(u)[0])(hjv)

    def _hessian_block(self, x: Tensor, y: Tensor, V: Tensor) -> Tensor:
        grad_fn = torch.func.grad(lambda th: self.task.loss(self.fm(th, x), y).sum())
        return torch.func.vmap(lambda v: torch.func.jvp(grad_fn, (self.fm.theta,), (v,))[1])(V)

    def dense(self, chunk: int = 256) -> Tensor:
        """The full p×p matrix `C + weight_decay·I` (small p only).

        The GGN is accumulated from per-example output Jacobians, `(1/n) Σ_i J_iᵀ H_out,i J_i`
        (O backward passes per example for O outputs, then one product per chunk): far
        cheaper than p curvature products. The Hessian (and the fused head) use p products.
        """
        if self.kind == "ggn" and self.head is None:
            self._ran["torch.func per-example Jacobians (ggn)"] = None
            H = self._ggn_dense()
        else:
            eye = torch.eye(self.p, dtype=self.fm.dtype, device=self.fm.device)
            H = torch.cat([self.matvec(eye[i:i + chunk]) for i in range(0, self.p, chunk)])
        return 0.5 * (H + H.T)

    def _jacobians(self, max_elements: int = 1 << 23):
        """Yield `(J, outputs, targets)` per chunk of the curvature data: the per-example output
        Jacobians Tensor[b, O, p] (O backward passes per example), the outputs and targets."""
        single = lambda th, x: self.fm(th, unsqueeze(x))[0]
        jacobian = lambda th, x: map_examples(self.fm, torch.func.jacrev(single), th, x)
        for x, y in self.batches("curvature: per-example Jacobians"):
            outputs = self.fm(self.fm.theta, x).detach()
            per_row = max(1, max_elements // (outputs[0].numel() * self.p))
            for lo in range(0, len(y), per_row):
                rows = slice(lo, lo + per_row)
                J = jacobian(self.fm.theta, take(x, rows)).reshape(len(outputs[rows]), -1, self.p)
                yield J, outputs[rows], y[rows]

    def _ggn_dense(self, max_elements: int = 1 << 23) -> Tensor:
        """Σ_i J_iᵀ H_i J_i / n + weight_decay·I; with a convex loss as Σ MᵀM, M = Uᵀ J for the
        factor U of H (`Task.output_hessian_factor`: fewer rows), else with H itself."""
        total = torch.zeros(self.p, self.p, dtype=self.fm.dtype, device=self.fm.device)
        for J, outputs, y in self._jacobians(max_elements):
            if outputs[0].numel() > FACTOR_MAX_OUTPUTS:  # e.g. tokens × vocabulary: H J directly
                HJ = self._hessian_times(J, outputs, y)
                total.addmm_(J.reshape(-1, self.p).T, HJ.reshape(-1, self.p))
            elif getattr(self.task, "convex_loss", False):
                M = torch.einsum("bor,bop->brp", self.task.output_hessian_factor(outputs, y), J).reshape(-1, self.p)
                total.addmm_(M.T, M)
            else:
                H = self.task.output_hessian(outputs, y)
                total.addmm_(J.reshape(-1, self.p).T, torch.einsum("bok,bkp->bop", H, J).reshape(-1, self.p))
        return total / self.n + self.task.weight_decay * torch.eye(self.p, dtype=total.dtype, device=total.device)

    def _hessian_times(self, J: Tensor, outputs: Tensor, y: Tensor) -> Tensor:
        """H_out,i J_i for per-example Jacobians J: Tensor[b, O, p], through
        `Task.output_hessian_vp` (the output Hessian is never formed); Tensor[b, O, p]."""
        directions = J.permute(2, 0, 1).reshape(self.p, *outputs.shape)
        product = self.task.output_hessian_vp(outputs, y, directions)
        return product.reshape(self.p, *J.shape[:2]).permute(1, 2, 0)

    def mean_eigenvalue(self, probes: int = 32, seed: int = 0) -> float:
        """trace(C + weight_decay·I) / p: exact for the GGN, `(1/n) Σ_i tr(H_out,i J_i J_iᵀ)`
        from the per-example Jacobians (one Jacobian pass), and for the fused head; a
        Hutchinson estimate with `probes` Rademacher vectors for the Hessian."""
        if self.head is not None:
            self._ran[FUSED_HEAD] = None
            return self.head.mean_eigenvalue()
        if self.kind == "ggn":
            self._ran["torch.func per-example Jacobians (ggn)"] = None
            trace = sum(float((self._hessian_times(J, out, y) * J).sum())
                        for J, out, y in self._jacobians())
            return trace / (self.n * self.p) + self.task.weight_decay
        gen = torch.Generator(device="cpu").manual_seed(seed)
        Z = (torch.randint(0, 2, (probes, self.p), generator=gen) * 2 - 1).to(self.fm.dtype).to(self.fm.device)
        return float((Z * self.matvec(Z)).sum() / (probes * self.p))

    def largest_eigenvalue(self, iterations: int = 30, seed: int = 0) -> float:
        """Power-iteration estimate of the largest |eigenvalue| of C + weight_decay·I."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn(self.p, generator=gen, dtype=self.fm.dtype).to(self.fm.device)
        v = v / v.norm()
        estimate = 0.0
        for _ in range(iterations):
            w = self.matvec(v)
            estimate = float(w.norm())
            if estimate == 0.0:
                break
            v = w / estimate
        return estimate


def damped_dense(curvature: Curvature, damping: float) -> Tensor:
    """`H + λI`, Tensor[p, p]: the dense curvature (with its weight decay) plus the damping. The
    one place it is built from curvature data; a method that factorised it returns its own
    (`Method.damped_curvature`)."""
    eye = torch.eye(curvature.p, dtype=curvature.fm.dtype, device=curvature.fm.device)
    return curvature.dense() + float(damping) * eye
