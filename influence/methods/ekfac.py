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
sampled. Costs one backward pass per output per batch (cheap for tens of classes). A
language model's output Hessian (tokens × vocabulary) is never formed: pseudo-labels drawn
from the model's own predictions at every scored token give an unbiased estimate of the
same GGN (`output_samples` backward passes per batch, as Kronfluence does). Padding
(`attention_mask == 0`) stays out of the activation factor A.
Layers are independent (block-diagonal); the task's weight decay and the damping λ are
added to the eigenvalues: P = blockdiag(Q diag(1/(Λ + wd + λ)) Qᵀ).

Scores follow the package sign convention: removing train_i changes m(test_j) by about
+score[j, i] / n_train.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from influence.batching import to_model
from influence.curvature import Curvature
from influence.damping import DAMPING_RATIO_CONVEX, Damping
from influence.errors import InvalidArgumentError
from influence.index import INDEX_BUDGET_BYTES
from influence.linalg import eigh
from influence.methods.base import Method, TrainFeatures, register
from influence.model import FunctionalModel
from influence.options import check_int, check_number

SUPPORTED = ("nn.Linear, transformers' Conv1D, and nn.Conv2d with groups=1, "
             "padding_mode='zeros' and numeric padding")
# Default damping ratios (× the mean eigenvalue) for a convex / non-convex model. EK-FAC with a
# dense block is an approximate curvature, and a little more damping than `exact`'s 0.3 suits
# it (LDS of the MLPs of benchmarks/lds.py with a 2048 block, ratios 0.3 / 0.5 / 1.0 — digits:
# 0.812, 0.809, 0.796; MNIST-5k (and 0.1): 0.615, 0.636, 0.649, 0.665): 0.5 is near the best
# of both, where 0.3 loses 0.013 on MNIST-5k and 1.0 loses 0.016 on digits.
DAMPING_RATIOS = (DAMPING_RATIO_CONVEX, 0.5)
# For per-token outputs (a language model, sampled pseudo-labels) much less: its spectrum is
# heavy-tailed, and the mean eigenvalue sits far above most of it. benchmarks/lm_facts.py (small
# GPT-2, 6 planted facts, recall@10 of their documents) by ratio: 0.5 → 0.53, 0.05 → 0.58,
# 5e-3 → 0.72, 1e-3 → 0.91, 1e-4 / 1e-5 → 0.89 (Kronfluence's default, an absolute 1e-8: 0.89);
# 8 facts, 3 corpus seeds: 1e-3 → 0.869, 1e-4 → 0.864, 1e-6 → 0.868 (Kronfluence 0.872).
SEQUENCE_DAMPING_RATIOS = (1e-3, 1e-3)
# Self-influence (`self_damping_ratio`, the default): mislabel ranking wants far less damping
# than queries. benchmarks/research/self_influence_study.py, ROC AUC by ratio, query λ at 0.5:
# converged (L-BFGS) ReLU MLP on 4,000 Adult rows, 10% / 30% flipped: 0.5 → 0.763 / 0.605,
# 1e-3 → 0.770 / 0.609 (Kronfluence EK-FAC 0.770 / 0.610); digits and minibatch-Adam tasks tie.
SELF_DAMPING_RATIO = 1e-3
# A layer with more inputs or outputs than this (a language model's head over a 50k vocabulary:
# a 50k × 50k factor, 10 GB) is left out like an unsupported one.
MAX_FACTOR_SIDE = 16_384
# The dense block is estimated on at most this many examples (a fixed random subset).
DENSE_SAMPLES = 8192


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


def coverage(fm: FunctionalModel, inputs) -> tuple[int, str | None]:
    """How many attributed scalars EK-FAC covers for this model, or why it cannot run
    (a covered layer used twice per forward pass, or not at all, on `inputs`)."""
    layers, _ = find_layers(fm, skip_unsupported=True) if _any_supported(fm) else ([], [])
    if not layers:
        return 0, f"no attributed parameter is in an {SUPPORTED.split(',')[0]} / nn.Conv2d layer"
    calls = dict.fromkeys(range(len(layers)), 0)
    handles = [l.module.register_forward_hook(lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, l in enumerate(layers)]
    try:
        with torch.no_grad():
            fm(fm.theta, inputs)
    except (RuntimeError, TypeError, ValueError, IndexError):  # fit() reports it, naming the argument
        return 0, "the model does not run on the training inputs"
    finally:
        for h in handles:
            h.remove()
    odd = [layers[i].name for i, count in calls.items() if count != 1]
    if odd:
        return 0, f"layers {odd} do not run exactly once per forward pass"
    return int(sum(l.index.numel() for l in layers)), None


def embedding_parameters(fm: FunctionalModel) -> list[str]:
    """Attributed parameters of `nn.Embedding` modules (token and position embeddings; a
    weight tied to an output layer is named once, as the embedding). EK-FAC leaves them
    out: an embedding's input is one-hot, so its activation factor is the diagonal of token
    counts (a vocabulary-sized block per example), and each document's gradient touches only
    the rows of its own tokens; the layers above carry what the model learnt from them."""
    owned = {f"{name}.weight" if name else "weight" for name, m in fm.model.named_modules()
             if isinstance(m, nn.Embedding)}
    return [n for n in fm.names if n in owned]


def _any_supported(fm: FunctionalModel) -> bool:
    return any(_supported(m) for m in fm.model.modules())


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' `Conv1D` (GPT-2's layers): a linear layer `x @ W + b` with W: [d_in, d_out]
    (the transpose of nn.Linear's), recognised without importing transformers."""
    return type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers")


def _supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear) or _is_conv1d(module):
        return True
    return (isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


def _parameter_name(fm: FunctionalModel, module: nn.Module, mod_name: str, attr: str) -> str:
    """The attributed name of `module.<attr>`: its own dotted name, or, for a weight tied to
    another module's (GPT-2's `lm_head` shares the token embedding's), the name it is
    attributed under. The layer is then factored as the output layer it is; the embedding
    lookup's share of the tied weight's gradient is left out (as Kronfluence does)."""
    own = f"{mod_name}.{attr}" if mod_name else attr
    tensor = getattr(module, attr, None)
    if own in fm.names or not isinstance(tensor, nn.Parameter):
        return own
    tied = [n for n, p in fm.model.named_parameters() if p is tensor]
    return tied[0] if tied and tied[0] in fm.names else own


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
        w, b = (_parameter_name(fm, module, mod_name, attr) for attr in ("weight", "bias"))
        if not _supported(module) or (w not in offsets and b not in offsets) or {w, b} & covered \
                or max(module.weight.shape[:2]) > MAX_FACTOR_SIDE:
            continue
        d_out = module.weight.shape[1 if _is_conv1d(module) else 0]
        cols = []
        if w in offsets:
            flat = torch.arange(module.weight.numel())
            rows = flat.view(-1, d_out).T if _is_conv1d(module) else flat.view(d_out, -1)
            cols.append(offsets[w] + rows)
        if b in offsets:
            cols.append(offsets[b] + torch.arange(d_out).view(d_out, 1))
        layers.append(_Layer(mod_name, module, torch.cat(cols, dim=1).to(fm.device), w in offsets, b in offsets))
        covered.update(n for n in (w, b) if n in offsets)
    skipped = [n for n in fm.names if n not in covered]
    if skipped and not skip_unsupported:
        raise InvalidArgumentError(
            f"method='ekfac' supports parameters of {SUPPORTED}, with at most "
            f"{MAX_FACTOR_SIDE:,} inputs and outputs; these attributed parameters are not in such "
            f"a module: {skipped}. Restrict `task.parameters` to supported layers, or pass "
            "skip_unsupported=True "
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
        dense_block: how many components, those of largest K-FAC eigenvalue across all
            layers (and kept), get the exact GGN between them (a dense r × r block,
            cross-layer terms included) instead of EK-FAC's diagonal; 0 for plain EK-FAC.
            With r ≥ the kept components and keep=1.0 this is `exact`. Not used with
            sampled pseudo-labels (`output_samples`): their estimate of it is too noisy to
            invert. Accumulated in the eigenvalue-correction pass (over its first
            `DENSE_SAMPLES` examples), O(r²) per example. LDS at defaults: digits MLP 0.639 → 0.803, MNIST-5k MLP 0.577 → 0.644
            (exact/cg: 0.812, 0.659).
        output_rank: how many directions of each example's output Hessian are
            back-propagated in the curvature passes: its best rank-`output_rank`
            approximation (`None`: all, C for C-class cross-entropy). A classifier's output
            Hessian `diag(p) − ppᵀ` weighs its most probable classes; the share of its trace
            kept is `diagnostics["output_curvature_kept"]`. Measured (benchmarks/lds.py
            problems, all → 3): digits MLP LDS 0.809 → 0.803 and fit 1.4 → 0.5 s, MNIST-5k
            MLP 0.646 → 0.644 and 6.5 → 3.2 s, CNN 0.393 → 0.395 and 12.6 → 5.4 s.
        output_samples: for a task with per-token outputs (`LanguageModelingTask`): how many
            pseudo-labels are drawn per scored position from the model's own predictive
            distribution (`Task.sample_output_hessian_factor`), each back-propagated once —
            an unbiased estimate of the GGN that never forms the sequence × vocabulary output
            Hessian. 0: the exact factorisation (tiny vocabularies and sequences only). Tasks
            without a sampler (classification, regression) ignore it.
        self_damping_ratio: λ for `self_influence()` alone, as a multiple of the mean
            eigenvalue, when neither `damping` nor `damping_ratio` is given (queries keep the
            default ratio; an explicit damping applies to both). None: the queries' λ. Ranking
            training examples by self-influence (mislabel detection) wants the small-curvature
            directions undamped: see `SELF_DAMPING_RATIO`.
        max_components: at most this many components are kept (those of largest
            Λ/(Λ + wd + λ)), whatever `keep` asks. None: no limit, except that a training
            set whose index of every component would exceed `INDEX_BUDGET_BYTES` gets the
            limit that fits (set when the method is built, and stored with the index).
    """

    correct_eigenvalues: bool = True
    skip_unsupported: bool = False
    keep: float = 0.99
    dense_block: int = 1024
    output_rank: int | None = 3
    output_samples: int = 1
    max_components: int | None = None
    self_damping_ratio: float | None = SELF_DAMPING_RATIO

    def __post_init__(self):
        check_int(self.output_samples, "output_samples", minimum=0)
        check_int(self.max_components, "max_components", minimum=1, optional=True)
        check_int(self.dense_block, "dense_block", minimum=0)
        check_int(self.output_rank, "output_rank", minimum=1, optional=True)
        check_number(self.keep, "keep", positive=True)
        check_number(self.self_damping_ratio, "self_damping_ratio", positive=True, optional=True)
        if self.keep > 1:
            raise InvalidArgumentError(f"`keep` must be in (0, 1], got {self.keep!r}")


@register
class EKFAC(Method):
    """Block-diagonal (E)K-FAC preconditioner over `nn.Linear` / `nn.Conv2d` layers, with the
    index in its eigenbasis.

    `fit` (before the training features, which live in its eigenbasis) makes two passes over
    the data: the Kronecker factors (then their eigenbases), then the corrected eigenvalues Λ
    and the dense block together; then λ (the automatic damping uses the mean of Λ — the
    exact trace of the GGN — so it costs no extra pass) and which components to keep (`keep`).
    Features are the per-example gradients rotated into the Kronecker eigenbasis,
    φ = vec(Q_Sᵀ G Q_A)[kept] (Tensor[b, K], K ≤ p), so P is diagonal, `1/(Λ + wd + λ)`,
    and a query or a self-influence is one elementwise product. Diagnostics list the layers,
    their factor sizes, the components kept, and the skipped parameters.
    """

    name = "ekfac"
    Options = EKFACOptions
    features_use_curvature = True

    @classmethod
    def resolve_options(cls, options: dict[str, Any], fm: FunctionalModel,
                        n_train: int | None) -> dict[str, Any]:
        """A `max_components` that keeps the index within `INDEX_BUDGET_BYTES` when one of all
        p components would not fit (a language model over many documents)."""
        row = (n_train or 0) * fm.dtype.itemsize
        if options.get("max_components") is None and row and row * fm.p > INDEX_BUDGET_BYTES:
            options = {**options, "max_components": max(1, INDEX_BUDGET_BYTES // row)}
        return options

    def fit(self, fm: FunctionalModel, curvature: Curvature | None, damping: Damping,
            train_features: TrainFeatures | None) -> dict[str, Any]:
        self.layers, skipped = find_layers(curvature.fm, self.options.skip_unsupported)
        self._trace_kept, self._sampled = (0.0, 0.0), False
        self._generator = torch.Generator(device=curvature.fm.device).manual_seed(0)
        A, S = self._factors(curvature)
        blocks = {}
        for layer, a, s in zip(self.layers, A, S):
            (ea, qa), (es, qs) = eigh(a), eigh(s)
            blocks[layer.key] = {"index": layer.index, "QA": qa, "QS": qs, "eigenvalues": torch.outer(es, ea)}
        self.blocks = blocks
        # A dense block from sampled pseudo-gradients is a rank ≤ n·samples estimate whose noise its
        # inverse amplifies (tiny GPT-2 vs its exact GGN: score Pearson 0.15 with it, 0.20 without).
        dense_flat = _top_components(blocks, 0 if self._sampled else self.options.dense_block)
        corrected, B = self._second_pass(curvature, dense_flat)
        for layer, eigenvalues in zip(self.layers, corrected or []):  # each layer's corrected Λ
            blocks[layer.key]["eigenvalues"] = eigenvalues
        wd = curvature.task.weight_decay
        spectrum = torch.cat([b["eigenvalues"].reshape(-1) for b in blocks.values()])
        lam, source = damping.resolve(lambda: float(spectrum.mean()) + wd, "mean eigenvalue (EK-FAC trace)",
                                      SEQUENCE_DAMPING_RATIOS if self._sampled else DAMPING_RATIOS)
        kept_per_block = _kept_components(blocks, wd + lam, self.options.keep,
                                          self.options.max_components)
        for block, kept in zip(blocks.values(), kept_per_block):
            block["kept"] = kept
        dense = _dense_state(B, [b["kept"] for b in blocks.values()], dense_flat) if B is not None else {}
        self_lam = self._self_damping(damping, lam, float(spectrum.mean()) + wd)
        self.restore({**self._block_state(), **dense, "damping": _scalar(lam),
                      "weight_decay": _scalar(wd), "self_damping": _scalar(self_lam)}, curvature)
        return {"damping_source": source, "self_influence_damping": self_lam,
                "skipped_parameters": skipped,
                "layers": {l.key: {"A": tuple(A[i].shape), "S": tuple(S[i].shape),
                                   "kept": len(blocks[l.key]["kept"])}
                           for i, l in enumerate(self.layers)},
                "eigenvalue_correction": self.options.correct_eigenvalues,
                "ekfac_curvature": self._curvature_note(),
                "output_curvature_kept": (1.0 if self._trace_kept[1] == 0
                                          else self._trace_kept[0] / self._trace_kept[1])}

    def _self_damping(self, damping: Damping, lam: float, mean: float) -> float:
        """λ of `self_scores`: `self_damping_ratio` × `mean` when the damping is automatic and
        the method's own default (not sampled pseudo-labels), else the queries' `lam`."""
        ratio = self.options.self_damping_ratio
        if ratio is None or self._sampled or damping.value is not None or damping.ratio is not None:
            return lam
        return ratio * mean

    def _curvature_note(self) -> str:
        if self._sampled:
            return (f"ggn (sampled pseudo-labels: {self.options.output_samples} per scored "
                    "position, drawn from the model's own predictions; the sequence × vocabulary "
                    "output Hessian is never formed)")
        cut = self._trace_kept[1] != 0
        return "ggn (exact output-Hessian factorisation)" + (
            f", its top {self.options.output_rank} directions per example" if cut else "")

    def feature_dim(self, fm: FunctionalModel) -> int:
        return int(self.inverse.numel())

    def features(self, fm: FunctionalModel, fn, inputs, targets: Tensor) -> Tensor:
        """φ = vec(Q_Sᵀ G Q_A)[kept] per layer, from one batched backward pass: a layer's
        per-example gradient is G = Σ_t g_t ãᵀ_t (g: gradient at its output), so the rotated
        one is Σ_t (Q_Sᵀ g_t)(Q_Aᵀ ã_t)ᵀ — no per-example p-vector is ever formed."""
        layers = find_layers(fm, self.options.skip_unsupported)[0]  # this model's modules
        targets = targets.to(fm.device)
        with self._layer_io(fm, layers) as run:
            out, acts, outs = run(to_model(inputs, fm.device, fm.dtype))
            grads = torch.autograd.grad(fn(out, targets).sum(), outs, allow_unused=True)
        parts = []
        for layer, a, o, g in zip(layers, acts, outs, grads):
            b = self.blocks[layer.key]
            rotated = _rotate(layer.output_grads(torch.zeros_like(o) if g is None else g), a, b["QS"], b["QA"])
            parts.append(_entries(rotated, b["kept"]))
        return torch.cat(parts, dim=1).to(fm.dtype)

    # ------------------------------------------------------------------ passes over the data
    @contextmanager
    def _layer_io(self, fm: FunctionalModel, layers: list[_Layer]):
        """Yield `run(x) -> (outputs, layer inputs ã [b, T, d_in], layer outputs)`, with θ
        requiring grad so the layer outputs can be differentiated."""
        captured: dict[int, tuple[Tensor, Tensor]] = {}

        def hook(i):
            def record(module, args, output):
                if i in captured:
                    raise InvalidArgumentError(f"method='ekfac': layer {layers[i].name!r} runs more than once "
                                               "per forward pass (weight sharing), which is not supported")
                captured[i] = (args[0].detach(), output)
            return record

        def run(x):
            captured.clear()
            with torch.enable_grad():
                out = fm(theta, x)
            unused = [l.name for i, l in enumerate(layers) if i not in captured]
            if unused:
                raise InvalidArgumentError(f"method='ekfac': layers {unused} hold attributed parameters but do "
                                           "not run in the forward pass")
            return out, [l.inputs(captured[i][0]) for i, l in enumerate(layers)], [captured[i][1]
                                                                                  for i in range(len(layers))]

        theta = fm.theta.detach().clone().requires_grad_(True)
        handles = [l.module.register_forward_hook(hook(i)) for i, l in enumerate(layers)]
        try:
            yield run
        finally:
            for h in handles:
                h.remove()

    def _pseudo_gradients(self, curvature: Curvature, desc: str, limit: int | None = None
                          ) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
        """Per batch: the layer inputs ã [b, T, d_in] and, for each output-Hessian factor
        column c, the back-propagated g [b, T, d_out] — yielded as (ã per layer, [g per layer] per c)."""
        with self._layer_io(curvature.fm, self.layers) as run:
            for x, y in curvature.batches(desc, limit):  # the (sub)sampled training inputs, held in memory
                out, acts, outs = run(x)
                mask = _position_mask(x)
                if mask is not None:  # padding: no gradient there; its activations stay out of A
                    acts = [a * mask[:, :, None].to(a.dtype) if a.shape[1] == mask.shape[1] else a
                            for a in acts]
                factor = self._output_factor(curvature.task, out.detach(), y)  # [b, O, r]
                grads = []
                for c in range(factor.shape[2]):
                    gs = torch.autograd.grad(out, outs, factor[:, :, c].reshape(out.shape), retain_graph=True,
                                             allow_unused=True)
                    grads.append([l.output_grads(torch.zeros_like(o) if g is None else g)
                                  for l, o, g in zip(self.layers, outs, gs)])
                yield acts, grads

    def _output_factor(self, task, outputs: Tensor, targets: Tensor) -> Tensor:
        """The output-Hessian factor [b, O, r] whose columns are back-propagated: the task's
        sampled pseudo-labels (`output_samples` per position) when it has them (a language
        model), else its exact factor cut to `output_rank` directions."""
        if self.options.output_samples:
            samples = self.options.output_samples
            sampled = task.sample_output_hessian_factor(outputs, targets, samples, self._generator)
            if sampled is not None:
                self._sampled = True
                return sampled
        return self._leading(task.output_hessian_factor(outputs, targets))

    def _leading(self, factor: Tensor) -> Tensor:
        """The best rank-`output_rank` approximation of each example's U Uᵀ (U = `factor`,
        [b, O, r]), as a factor [b, O, output_rank]: U v_k for the top eigenvectors v_k of the
        r × r Gram UᵀU (U v_k ⟂ each other, |U v_k|² = its eigenvalue). Tallies the share of
        the output Hessians' trace it keeps (`diagnostics["output_curvature_kept"]`)."""
        m = self.options.output_rank
        if m is None or factor.shape[2] <= m:
            return factor
        w, V = torch.linalg.eigh(factor.transpose(1, 2) @ factor)  # ascending, [b, r], [b, r, r]
        w = w.clamp_min(0)
        self._trace_kept = (self._trace_kept[0] + float(w[:, -m:].sum()), self._trace_kept[1] + float(w.sum()))
        return factor @ V[:, :, -m:]

    def _factors(self, curvature: Curvature) -> tuple[list[Tensor], list[Tensor]]:
        A = [0.0] * len(self.layers)
        S = [0.0] * len(self.layers)
        for acts, grads in self._pseudo_gradients(curvature, "ekfac: factors"):
            for i, a in enumerate(acts):
                A[i] = A[i] + torch.einsum("bti,btj->ij", a, a) / a.shape[1]
                for g in grads:
                    S[i] = S[i] + torch.einsum("bto,btp->op", g[i], g[i])
        return [a / curvature.n for a in A], [s / curvature.n for s in S]

    def _rotated(self, curvature: Curvature, desc: str, limit: int | None = None
                 ) -> Iterator[list[list[tuple[Tensor, Tensor | None]]]]:
        """Per batch, per output-Hessian factor column, per layer: the pseudo-gradient in the
        eigenbasis, Q_Sᵀ G Q_A, as `_rotate` returns it."""
        for acts, grads in self._pseudo_gradients(curvature, desc, limit):
            blocks = [self.blocks[l.key] for l in self.layers]
            yield [[_rotate(g[i], acts[i], b["QS"], b["QA"]) for i, b in enumerate(blocks)] for g in grads]

    def _second_pass(self, curvature: Curvature, dense_flat: list[Tensor]
                     ) -> tuple[list[Tensor] | None, Tensor | None]:
        """One pass of rotated pseudo-gradients z for both: the corrected eigenvalues
        Λ = (1/n) Σ_i Σ_c z_ic² (None without `correct_eigenvalues`), and the exact GGN among
        the `dense_flat` components (per layer, flat indices into [d_out, d_in]),
        B = (1/m) Σ_i Σ_c z_ic z_icᵀ over the first m = min(n, DENSE_SAMPLES) examples (None
        without a dense block). Skipped when neither is asked for."""
        correct, size = self.options.correct_eigenvalues, sum(len(d) for d in dense_flat)
        if not correct and not size:
            return None, None
        lam = [torch.zeros_like(self.blocks[l.key]["eigenvalues"]) for l in self.layers]
        B, seen, limit = None, 0, None if correct else DENSE_SAMPLES
        desc = "ekfac: eigenvalue correction" + (" and dense block" if size else "")
        for columns in self._rotated(curvature, desc, limit):
            if not columns:  # a batch whose output Hessians are all zero adds nothing
                continue
            rows = len(columns[0][0][0])
            for layers in columns:
                if correct:  # (u vᵀ)² summed over examples is (u²)ᵀ(v²): no outer products
                    for i, (u, v) in enumerate(layers):
                        lam[i] += (u * u).sum(0) if v is None else (u * u).T @ (v * v)
                if size and seen < DENSE_SAMPLES:
                    z = torch.cat([_entries(r, d) for r, d in zip(layers, dense_flat)], dim=1)[:DENSE_SAMPLES - seen]
                    B = z.T @ z if B is None else B.addmm_(z.T, z)
            seen += rows
        return ([x / curvature.n for x in lam] if correct else None,
                None if B is None else B / min(curvature.n, DENSE_SAMPLES))

    # ------------------------------------------------------------------ solve and persistence
    def _block_state(self) -> dict[str, Tensor]:
        state = {f"{key}/{name}": t for key, block in self.blocks.items() for name, t in block.items()}
        if getattr(self, "dense", None) is not None:
            state |= {f"<dense-block>/{name}": t for name, t in self.dense.items()}
        return state

    def state_dict(self) -> dict[str, Tensor]:
        return {"damping": _scalar(self.damping), "weight_decay": _scalar(self.weight_decay),
                "self_damping": _scalar(self.self_damping), **self._block_state()}

    def restore(self, state: dict[str, Tensor], curvature: Curvature | None) -> None:
        """Restore the per-layer blocks (flat-θ index, Q_A, Q_S, eigenvalues, kept components) and λ."""
        self.damping, self.weight_decay = float(state["damping"]), float(state["weight_decay"])
        # An index saved before `self_damping` existed used one λ for both.
        self.self_damping = float(state.get("self_damping", state["damping"]))
        self.blocks = {}
        for name, t in state.items():
            if "/" in name:
                key, part = name.rsplit("/", 1)
                self.blocks.setdefault(key, {})[part] = t
        self.dense = self.blocks.pop("<dense-block>", None)
        shift = self.weight_decay + self.damping
        self.inverse, self.dense_inverse = self._inverses(shift)
        self_shift = self.weight_decay + self.self_damping
        self.self_inverse, self.self_dense_inverse = self._inverses(self_shift)

    def _inverses(self, shift: float) -> tuple[Tensor, Tensor | None]:
        """1/(Λ + shift) of the kept diagonal components (0 where the dense block takes over),
        and 1/(eigenvalues + shift) of the dense block (None without one)."""
        inverse = torch.cat([1.0 / (b["eigenvalues"].reshape(-1)[b["kept"]] + shift)
                             for b in self.blocks.values()])
        if self.dense is None:
            return inverse, None
        inverse[self.dense["positions"]] = 0.0  # those components go through the dense block
        return inverse, 1.0 / (self.dense["values"] + shift)

    def precondition(self, G: Tensor) -> tuple[Tensor, None]:
        out = G * self.inverse.to(G.device, G.dtype)
        if self.dense is not None:
            V, where = self.dense["vectors"], self.dense["positions"]
            out[:, where] = (((G[:, where].to(V.dtype) @ V) * self.dense_inverse) @ V.T).to(G.dtype)
        return out, None

    def self_scores(self, F: Tensor) -> tuple[Tensor, None]:
        """φᵀ P_self φ per row of F (Tensor[b, K] -> Tensor[b]), P_self damped by `self_damping`."""
        values = (F * F) @ self.self_inverse.to(F.device, F.dtype)
        if self.dense is not None:
            V = self.dense["vectors"]
            rotated = F[:, self.dense["positions"]].to(V.dtype) @ V
            values = values + (rotated ** 2 @ self.self_dense_inverse).to(F.dtype)
        return values, None


def _position_mask(inputs) -> Tensor | None:
    """The `attention_mask` [b, L] of a dict of model inputs (1 = a real token), or None."""
    mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
    return mask if isinstance(mask, Tensor) and mask.ndim == 2 else None


def _scalar(value: float) -> Tensor:
    return torch.tensor(float(value), dtype=torch.float64)


def _rotate(g: Tensor, a: Tensor, QS: Tensor, QA: Tensor) -> tuple[Tensor, Tensor | None]:
    """A layer's per-example gradient G = Σ_t g_t ã_tᵀ (g: [b, T, d_out], ã: [b, T, d_in])
    rotated into its Kronecker eigenbasis, Q_Sᵀ G Q_A. One position (a plain Linear): the
    two sides (g Q_S [b, d_out], ã Q_A [b, d_in]), whose outer product it is, so that only
    the entries needed are ever formed. Several: Tensor[b, d_out, d_in] and None, by the
    cheaper order — each position's two sides rotated first, Σ_t (Q_Sᵀ g_t)(Q_Aᵀ ã_t)ᵀ, for
    few positions (a sequence of T tokens: T·(d_out² + d_in²) products), else G first, then
    the rotation (a Conv2d's many patches: d_out·d_in·(d_out + d_in)). On the large model of
    benchmarks/lm_facts.py (T = 16, d ≤ 512) rotating first is ~8× fewer products."""
    g, a = g.to(QS.dtype), a.to(QA.dtype)
    T, d_out, d_in = a.shape[1], QS.shape[0], QA.shape[0]
    if T == 1:
        return g[:, 0] @ QS, a[:, 0] @ QA
    if T * (d_out * d_out + d_in * d_in) < d_out * d_in * (d_out + d_in):
        return torch.einsum("bto,btk->bok", g @ QS, a @ QA), None
    return QS.T @ torch.einsum("bto,btk->bok", g, a) @ QA, None


def _entries(rotated: tuple[Tensor, Tensor | None], flat: Tensor) -> Tensor:
    """Entries `flat` (row-major indices into [d_out, d_in]) of a `_rotate`d gradient per
    example: Tensor[b, len(flat)]."""
    u, v = rotated
    if v is None:
        return u.reshape(len(u), -1)[:, flat]
    rows, cols = flat // v.shape[1], flat % v.shape[1]
    return u[:, rows] * v[:, cols]


def _top_components(blocks: dict, count: int) -> list[Tensor]:
    """Per block, the sorted flat indices of the `count` components of largest eigenvalue
    across all blocks (K-FAC's, before the correction: known before the second pass)."""
    flat = [b["eigenvalues"].reshape(-1) for b in blocks.values()]
    mask = torch.zeros(sum(len(f) for f in flat), dtype=torch.bool)
    mask[torch.cat(flat).argsort(descending=True)[:count].cpu()] = True
    return [torch.nonzero(m).flatten().to(f.device) for m, f in zip(mask.split([len(f) for f in flat]), flat)]


def _dense_state(B: Tensor, kept: list[Tensor], dense_flat: list[Tensor]) -> dict[str, Tensor]:
    """The dense block among the `dense_flat` components that are also `kept` (B's rows and
    columns are the `dense_flat` ones, block after block): its eigenpairs, and where its
    components sit in the feature vector (the concatenation over blocks of the kept entries)."""
    offsets = [0, *torch.tensor([len(k) for k in kept]).cumsum(0).tolist()]
    rows, positions, start = [], [], 0
    for lo, k, d in zip(offsets, kept, dense_flat):
        at = torch.searchsorted(k, d).clamp_max(max(len(k) - 1, 0))
        inside = (at < len(k)) & (k[at] == d) if len(k) else torch.zeros_like(d, dtype=torch.bool)
        rows.append(start + torch.nonzero(inside).flatten())
        positions.append(lo + at[inside])
        start += len(d)
    rows = torch.cat(rows)
    e, V = eigh(B[rows][:, rows])
    return {"<dense-block>/positions": torch.cat(positions), "<dense-block>/values": e, "<dense-block>/vectors": V}


def _kept_components(blocks: dict, shift: float, keep: float,
                     limit: int | None = None) -> list[Tensor]:
    """Per block, the flat indices of the eigenbasis components kept: all with Λ > 0 taken in
    decreasing Λ until `keep` of the effective dimension Σ Λ/(Λ + shift) is reached, and at
    most `limit` of them."""
    flat = [b["eigenvalues"].reshape(-1) for b in blocks.values()]
    spectrum = torch.cat(flat)
    share = (spectrum / (spectrum + shift)).clamp_min(0)
    order = spectrum.argsort(descending=True)
    cumulative = share[order].cumsum(0)
    count = int(torch.searchsorted(cumulative, keep * float(cumulative[-1]) * (1 - 1e-12)).item()) + 1
    count = count if limit is None else min(count, limit)
    chosen = order[:count][spectrum[order[:count]] > 0]
    mask = torch.zeros_like(spectrum, dtype=torch.bool)
    mask[chosen] = True
    return [torch.nonzero(m).flatten() for m in mask.split([len(f) for f in flat])]
