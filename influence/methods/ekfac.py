"""`method="ekfac"`: eigenvalue-corrected Kronecker-factored curvature (George et al. 2018;
Grosse et al. 2023), per `nn.Linear` / `nn.Conv2d` layer.

For a layer with weight W (bias appended as a last input column, W̃: [d_out, d_in]), input
activations ã (Tensor[b, T, d_in], T positions: 1 for a plain Linear, H'·W' patches for a
Conv2d) and pseudo-gradients g of the layer output (Tensor[b, T, d_out]):

    A = (1/(nT)) Σ_i Σ_t ã ãᵀ = Q_A diag(a) Q_Aᵀ,    S = (1/n) Σ_i Σ_c Σ_t g gᵀ = Q_S diag(s) Q_Sᵀ
    K-FAC:  block ≈ S ⊗ A = (Q_S ⊗ Q_A) diag(s ⊗ a) (Q_S ⊗ Q_A)ᵀ
    EK-FAC: the diagonal is replaced by Λ[o, k] = (1/n) Σ_i Σ_c (Q_Sᵀ G_ic Q_A)[o, k]²,
            G_ic = Σ_t g ãᵀ the per-example gradient of W̃ — the exact second moment of the
            gradients in the Kronecker eigenbasis.

Curvature: the Gauss-Newton matrix (GGN), exactly: for each example the output Hessian of
the loss H_out = Σ_c u_c u_cᵀ is factorised (double differentiation of `Task.loss`, then an
eigendecomposition) and each u_c is back-propagated, so Σ_c g gᵀ is the GGN — for softmax
cross-entropy the true Fisher with the expectation over labels y ~ p(y|x) taken exactly, not
sampled. Costs one backward pass per output per batch (cheap for tens of classes; a
sampled-label variant would be needed for large vocabularies).
Layers are independent (block-diagonal); the task's weight decay and the damping λ are
added to the eigenvalues: P = blockdiag(Q diag(1/(Λ + wd + λ)) Qᵀ).

Scores follow the package sign convention: removing train_i changes m(test_j) by about
+score[j, i] / n_train.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from influence.curvature import Curvature, output_hessian, output_hessian_factor
from influence.damping import Damping
from influence.errors import InvalidArgumentError
from influence.gradients import per_example_grads
from influence.methods.base import Method, TrainFeatures, register
from influence.model import FunctionalModel
from influence.options import check_int, check_number

SUPPORTED = "nn.Linear, and nn.Conv2d with groups=1, padding_mode='zeros' and numeric padding"


@dataclass
class _Layer:
    """One Kronecker block: the module, and where its W̃ lives in the flat θ."""

    name: str
    module: nn.Module
    index: Tensor  # LongTensor[d_out, d_in]: flat-θ position of W̃[o, k]
    has_weight: bool
    has_bias: bool

    @property
    def key(self) -> str:
        return self.name or "<root>"

    def inputs(self, a: Tensor) -> Tensor:
        """Layer input -> ã: Tensor[b, T, d_in] (patches for Conv2d; a column of ones for the bias)."""
        m = self.module
        if isinstance(m, nn.Conv2d):
            a = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride).transpose(1, 2)
        else:
            a = a.reshape(a.shape[0], -1, a.shape[-1])
        parts = ([a] if self.has_weight else []) + ([a.new_ones(*a.shape[:2], 1)] if self.has_bias else [])
        return torch.cat(parts, dim=2)

    def output_grads(self, g: Tensor) -> Tensor:
        """Gradient w.r.t. the layer output -> Tensor[b, T, d_out]."""
        if isinstance(self.module, nn.Conv2d):
            return g.flatten(2).transpose(1, 2)
        return g.reshape(g.shape[0], -1, g.shape[-1])


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


def find_layers(fm: FunctionalModel, skip_unsupported: bool) -> tuple[list[_Layer], list[str]]:
    """Kronecker blocks covering the attributed parameters, and the names left out.

    Raises `InvalidArgumentError` listing the attributed parameters outside supported
    modules unless `skip_unsupported`.
    """
    offsets, start = {}, 0
    for name, numel in zip(fm.names, fm.numels):
        offsets[name] = start
        start += numel
    layers, covered = [], set()
    for mod_name, module in fm.model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        w, b = prefix + "weight", prefix + "bias"
        if not _supported(module) or (w not in offsets and b not in offsets):
            continue
        d_out = module.weight.shape[0]
        cols = []
        if w in offsets:
            cols.append(offsets[w] + torch.arange(module.weight.numel()).view(d_out, -1))
        if b in offsets:
            cols.append(offsets[b] + torch.arange(d_out).view(d_out, 1))
        layers.append(_Layer(mod_name, module, torch.cat(cols, dim=1).to(fm.device), w in offsets, b in offsets))
        covered.update(n for n in (w, b) if n in offsets)
    skipped = [n for n in fm.names if n not in covered]
    if skipped and not skip_unsupported:
        raise InvalidArgumentError(
            f"method='ekfac' supports parameters of {SUPPORTED}; these attributed parameters are not in such a "
            f"module: {skipped}. Restrict `task.parameters` to supported layers, or pass skip_unsupported=True "
            "to ignore them (their gradient components then do not contribute to the scores)."
        )
    if not layers:
        raise InvalidArgumentError(f"method='ekfac' found no attributed parameters in a supported module ({SUPPORTED})")
    return layers, skipped


@dataclass(frozen=True)
class EKFACOptions:
    """Options of `method="ekfac"`.

    Attributes:
        correct_eigenvalues: True (default) for EK-FAC; False for plain K-FAC (Kronecker
            product of the factor eigenvalues).
        skip_unsupported: ignore attributed parameters outside supported modules instead of
            raising (they then do not contribute to the scores).
        keep: fraction of the effective dimension `Σ Λ/(Λ + wd + λ)` the index keeps: the
            eigenbasis components are taken in decreasing Λ until this fraction is reached
            (1.0: every component with Λ > 0). A component's expected share of a
            self-influence is Λ/(Λ + wd + λ), so the dropped ones carry at most 1 − keep of
            it on average.
    """

    correct_eigenvalues: bool = True
    skip_unsupported: bool = False
    keep: float = 0.99
    dense_block: int = 0

    def __post_init__(self):
        check_int(self.dense_block, "dense_block", minimum=0)
        check_number(self.keep, "keep", positive=True)
        if self.keep > 1:
            raise InvalidArgumentError(f"`keep` must be in (0, 1], got {self.keep!r}")


@register
class EKFAC(Method):
    """Block-diagonal (E)K-FAC preconditioner over `nn.Linear` / `nn.Conv2d` layers, with the
    index in its eigenbasis.

    `prepare` computes the factors, their eigenbases and the corrected eigenvalues Λ, then λ
    (the automatic damping uses the mean of Λ — the exact trace of the GGN — so it costs no
    extra pass) and which components to keep (`keep`). Features are the per-example
    gradients rotated into the Kronecker eigenbasis, φ = vec(Q_Sᵀ G Q_A)[kept]
    (Tensor[b, K], K ≤ p), so P is diagonal, `1/(Λ + wd + λ)`, and a query or a
    self-influence is one elementwise product. Diagnostics list the layers, their factor
    sizes, the components kept, and the skipped parameters.
    """

    name = "ekfac"
    Options = EKFACOptions
    features_use_curvature = True

    def prepare(self, curvature: Curvature, damping: Damping) -> dict[str, Any]:
        self.layers, skipped = find_layers(curvature.fm, self.options.skip_unsupported)
        A, S = self._factors(curvature)
        blocks = {}
        for layer, a, s in zip(self.layers, A, S):
            (ea, qa), (es, qs) = torch.linalg.eigh(a), torch.linalg.eigh(s)
            blocks[layer.key] = {"index": layer.index, "QA": qa, "QS": qs, "eigenvalues": torch.outer(es, ea)}
        self.blocks = blocks
        if self.options.correct_eigenvalues:
            for layer, lam in zip(self.layers, self._corrected_eigenvalues(curvature)):
                blocks[layer.key]["eigenvalues"] = lam
        wd = curvature.task.weight_decay
        spectrum = torch.cat([b["eigenvalues"].reshape(-1) for b in blocks.values()])
        lam, source = damping.resolve(lambda: float(spectrum.mean()) + wd, "mean eigenvalue (EK-FAC trace)")
        for block, kept in zip(blocks.values(), _kept_components(blocks, wd + lam, self.options.keep)):
            block["kept"] = kept
        dense = self._dense_block(curvature) if self.options.dense_block else {}
        self.restore({**self._block_state(), **dense, "damping": _scalar(lam), "weight_decay": _scalar(wd)},
                     curvature)
        self.info = {"damping_source": source, "skipped_parameters": skipped,
                     "layers": {l.key: {"A": tuple(A[i].shape), "S": tuple(S[i].shape),
                                        "kept": len(blocks[l.key]["kept"])} for i, l in enumerate(self.layers)},
                     "eigenvalue_correction": self.options.correct_eigenvalues,
                     "ekfac_curvature": "ggn (exact output-Hessian factorisation)"}
        return {}

    def fit(self, fm: FunctionalModel, curvature: Curvature | None, damping: Damping,
            train_features: TrainFeatures) -> dict[str, Any]:
        return self.info

    def feature_dim(self, fm: FunctionalModel) -> int:
        return int(self.inverse.numel())

    def features(self, fm: FunctionalModel, fn, inputs, targets: Tensor) -> Tensor:
        G = per_example_grads(fm, fn, inputs, targets)
        parts = []
        for b in self.blocks.values():
            qa, qs = b["QA"], b["QS"]
            rotated = qs.T @ G[:, b["index"].to(G.device)].to(qa.dtype) @ qa  # [m, d_out, d_in]
            parts.append(rotated.reshape(len(G), -1)[:, b["kept"].to(G.device)])
        return torch.cat(parts, dim=1).to(G.dtype)

    # ------------------------------------------------------------------ passes over the data
    def _pseudo_gradients(self, curvature: Curvature, desc: str) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
        """Per batch: the layer inputs ã [b, T, d_in] and, for each output-Hessian factor
        column c, the back-propagated g [b, T, d_out] — yielded as (ã per layer, [g per layer] per c)."""
        fm, task = curvature.fm, curvature.task
        captured: dict[int, tuple[Tensor, Tensor]] = {}

        def hook(i):
            def record(module, args, output):
                if i in captured:
                    raise InvalidArgumentError(f"method='ekfac': layer {self.layers[i].name!r} runs more than once "
                                               "per forward pass (weight sharing), which is not supported")
                captured[i] = (args[0].detach(), output)
            return record

        handles = [l.module.register_forward_hook(hook(i)) for i, l in enumerate(self.layers)]
        try:
            theta = fm.theta.detach().clone().requires_grad_(True)
            for x, y in curvature.batches(desc):  # the (sub)sampled training inputs, held in memory
                captured.clear()
                with torch.enable_grad():
                    out = fm(theta, x)
                    unused = [l.name for i, l in enumerate(self.layers) if i not in captured]
                    if unused:
                        raise InvalidArgumentError(f"method='ekfac': layers {unused} hold attributed parameters but do "
                                                   "not run in the forward pass")
                    factor = output_hessian_factor(output_hessian(task, out.detach(), y))  # [b, O, r]
                    acts = [l.inputs(captured[i][0]) for i, l in enumerate(self.layers)]
                    outs = [captured[i][1] for i in range(len(self.layers))]
                    grads = []
                    for c in range(factor.shape[2]):
                        gs = torch.autograd.grad(out, outs, factor[:, :, c].reshape(out.shape), retain_graph=True,
                                                 allow_unused=True)
                        grads.append([l.output_grads(torch.zeros_like(o) if g is None else g)
                                      for l, o, g in zip(self.layers, outs, gs)])
                yield acts, grads
        finally:
            for h in handles:
                h.remove()

    def _factors(self, curvature: Curvature) -> tuple[list[Tensor], list[Tensor]]:
        A = [0.0] * len(self.layers)
        S = [0.0] * len(self.layers)
        for acts, grads in self._pseudo_gradients(curvature, "ekfac: factors"):
            for i, a in enumerate(acts):
                A[i] = A[i] + torch.einsum("bti,btj->ij", a, a) / a.shape[1]
                for g in grads:
                    S[i] = S[i] + torch.einsum("bto,btp->op", g[i], g[i])
        return [a / curvature.n for a in A], [s / curvature.n for s in S]

    def _rotated(self, curvature: Curvature, desc: str) -> Iterator[list[list[Tensor]]]:
        """Per batch, per output-Hessian factor column, per layer: the pseudo-gradients in the
        Kronecker eigenbasis, Q_Sᵀ G Q_A: Tensor[b, d_out, d_in]."""
        for acts, grads in self._pseudo_gradients(curvature, desc):
            rotated_acts = [a @ self.blocks[l.key]["QA"] for l, a in zip(self.layers, acts)]
            yield [[torch.einsum("bto,btk->bok", g[i] @ self.blocks[l.key]["QS"], rotated_acts[i])
                    for i, l in enumerate(self.layers)] for g in grads]

    def _corrected_eigenvalues(self, curvature: Curvature) -> list[Tensor]:
        lam = [torch.zeros_like(self.blocks[l.key]["eigenvalues"]) for l in self.layers]
        for columns in self._rotated(curvature, "ekfac: eigenvalue correction"):
            for layers in columns:
                for i, G_rot in enumerate(layers):
                    lam[i] += (G_rot * G_rot).sum(0)
        return [x / curvature.n for x in lam]

    def _dense_block(self, curvature: Curvature) -> dict[str, Tensor]:
        """The exact GGN on the `dense_block` kept components of largest Λ (across layers):
        B = (1/n) Σ_i Σ_c z_ic z_icᵀ with z the rotated pseudo-gradients there; its eigenpairs,
        and where those components sit in the feature vector."""
        kept = [b["kept"] for b in self.blocks.values()]
        values = torch.cat([b["eigenvalues"].reshape(-1)[k] for b, k in zip(self.blocks.values(), kept)])
        positions = values.argsort(descending=True)[:self.options.dense_block].sort().values
        offsets = torch.tensor([0] + [len(k) for k in kept]).cumsum(0)
        per_layer = [positions[(positions >= lo) & (positions < hi)] - lo for lo, hi in zip(offsets, offsets[1:])]
        B = torch.zeros(len(positions), len(positions), dtype=values.dtype, device=values.device)
        for columns in self._rotated(curvature, "ekfac: dense block"):
            for layers in columns:
                z = torch.cat([G.reshape(len(G), -1)[:, k[idx]] for G, k, idx in zip(layers, kept, per_layer)], dim=1)
                B.addmm_(z.T, z)
        e, V = torch.linalg.eigh(B / curvature.n)
        return {"<dense-block>/positions": positions, "<dense-block>/values": e, "<dense-block>/vectors": V}

    # ------------------------------------------------------------------ solve and persistence
    def _block_state(self) -> dict[str, Tensor]:
        state = {f"{key}/{name}": t for key, block in self.blocks.items() for name, t in block.items()}
        if getattr(self, "dense", None) is not None:
            state |= {f"<dense-block>/{name}": t for name, t in self.dense.items()}
        return state

    def state_dict(self) -> dict[str, Tensor]:
        return {"damping": _scalar(self.damping), "weight_decay": _scalar(self.weight_decay), **self._block_state()}

    def restore(self, state: dict[str, Tensor], curvature: Curvature | None) -> None:
        """Restore the per-layer blocks (flat-θ index, Q_A, Q_S, eigenvalues, kept components) and λ."""
        self.damping, self.weight_decay = float(state["damping"]), float(state["weight_decay"])
        self.blocks = {}
        for name, t in state.items():
            if "/" in name:
                key, part = name.rsplit("/", 1)
                self.blocks.setdefault(key, {})[part] = t
        self.dense = self.blocks.pop("<dense-block>", None)
        shift = self.weight_decay + self.damping
        self.inverse = torch.cat([1.0 / (b["eigenvalues"].reshape(-1)[b["kept"]] + shift)
                                  for b in self.blocks.values()])
        if self.dense is not None:
            self.inverse[self.dense["positions"]] = 0.0  # those components go through the dense block
            self.dense_inverse = 1.0 / (self.dense["values"] + shift)

    def precondition(self, G: Tensor) -> tuple[Tensor, None]:
        out = G * self.inverse.to(G.device, G.dtype)
        if self.dense is not None:
            V, where = self.dense["vectors"], self.dense["positions"]
            out[:, where] = (((G[:, where].to(V.dtype) @ V) * self.dense_inverse) @ V.T).to(G.dtype)
        return out, None

    def self_scores(self, F: Tensor) -> tuple[Tensor, None]:
        values = (F * F) @ self.inverse.to(F.device, F.dtype)
        if self.dense is not None:
            V = self.dense["vectors"]
            values = values + ((F[:, self.dense["positions"]].to(V.dtype) @ V) ** 2 @ self.dense_inverse).to(F.dtype)
        return values, None


def _scalar(value: float) -> Tensor:
    return torch.tensor(float(value), dtype=torch.float64)


def _kept_components(blocks: dict, shift: float, keep: float) -> list[Tensor]:
    """Per block, the flat indices of the eigenbasis components kept: all with Λ > 0 taken in
    decreasing Λ until `keep` of the effective dimension Σ Λ/(Λ + shift) is reached."""
    flat = [b["eigenvalues"].reshape(-1) for b in blocks.values()]
    spectrum = torch.cat(flat)
    share = (spectrum / (spectrum + shift)).clamp_min(0)
    order = spectrum.argsort(descending=True)
    cumulative = share[order].cumsum(0)
    count = int(torch.searchsorted(cumulative, keep * float(cumulative[-1]) * (1 - 1e-12)).item()) + 1
    chosen = order[:count][spectrum[order[:count]] > 0]
    mask = torch.zeros_like(spectrum, dtype=torch.bool)
    mask[chosen] = True
    return [torch.nonzero(m).flatten() for m in mask.split([len(f) for f in flat])]
