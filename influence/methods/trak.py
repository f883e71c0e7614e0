"""`method="trak"`: randomly projected gradients with an empirical-Fisher solve (Park et al. 2023).

For each checkpoint c (default: only the model as given), φ_c(∇) = ∇ R with R: p×k a seeded
random projection, Φ_c: Tensor[n_train, k] the projected training-loss gradients, and

    score[j, i] = (1/C) Σ_c φ_c(∇m(test_j))ᵀ (Φ_cᵀ Φ_c / n + λ_c I)⁻¹ φ_c(∇ℓ(train_i))

(or the sum over checkpoints). Φᵀ Φ / n is the empirical Fisher of the training loss in the
projected space — TRAK's curvature, not `Attributor(curvature=...)`. Same sign convention as
the package: removing train_i changes m(test_j) by ≈ +score / n_train.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from influence.errors import InvalidArgumentError
from influence.methods.base import Method, TrainFeatures, register
from influence.methods.tracin import CheckpointGradients
from influence.model import FunctionalModel
from influence.projection import CountSketch, Projector

PROJECTIONS = ("rademacher", "gaussian", "countsketch", "orthogonal", "none")

# Default λ_c as a multiple of the mean eigenvalue of Φ_cᵀΦ_c/n. The projected empirical Fisher
# is singular when k > n and ill-conditioned otherwise. Chosen on the digits MLP LDS benchmark
# (benchmarks/lds.py --sweep): ratio 1 was best for k = 512, 1024 and 2048 among 0.01 … 30
# (k = 2048: 0.36 at 0.01, 0.52 at 0.1, 0.645 at 1, 0.57 at 10).
DAMPING_RATIO = 1.0


@register
class TRAK(Method):
    """Projected per-example gradients, block-diagonal `(ΦᵀΦ/n + λI)⁻¹` over checkpoints.

    Options:
        projection_dim: k, the projected dimension per checkpoint (default 2048). When
            k >= p a random projection can only distort the geometry, so the gradients are
            used unprojected (`projection` becomes "none"; see `diagnostics["projection"]`).
        projection: "rademacher" (default; ±1/√k entries) or "gaussian" (N(0, 1/k)), both the
            seeded `kernels.project` matrices (`influence.projection.Projector`: generated on
            the fly on GPU, cached on CPU when it fits); "countsketch" (each gradient
            coordinate added with a random sign to one of k buckets: O(p) per example
            instead of O(p·k), no p×k matrix; `influence.projection.CountSketch`);
            "orthogonal" (k ≤ p orthonormal columns from a seeded QR; materialises p×k,
            small p only); or "none".
        projection_seed: seed of R (the same R for train and test, and for every checkpoint).
        checkpoints: list of `state_dict()`s of the model to ensemble over; `None` uses the
            model as given. Index features are concatenated per checkpoint: [n, C·k].
        ensemble: "mean" (default) or "sum" of the per-checkpoint scores.
        damping_ratio: when `damping=None`, λ_c = damping_ratio × trace(Φ_cᵀΦ_c/n)/k
            (default `DAMPING_RATIO`). The chosen λ is in `self.damping` (the mean over
            checkpoints) and `diagnostics["damping_per_checkpoint"]`.
    """

    name = "trak"
    uses_curvature = False
    options = {"projection_dim": 2048, "projection": "rademacher", "projection_seed": 0, "checkpoints": None,
               "ensemble": "mean", "damping_ratio": None}

    def __init__(self, **options):
        super().__init__(**options)
        k, kind = self.config["projection_dim"], self.config["projection"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidArgumentError(f"`projection_dim` must be a positive integer, got {k!r}")
        if kind not in PROJECTIONS:
            raise InvalidArgumentError(f"`projection` must be one of {list(PROJECTIONS)}, got {kind!r}")
        if self.config["ensemble"] not in ("mean", "sum"):
            raise InvalidArgumentError(f"`ensemble` must be 'mean' or 'sum', got {self.config['ensemble']!r}")
        ratio = self.config["damping_ratio"]
        if ratio is not None and (not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or ratio < 0):
            raise InvalidArgumentError(f"`damping_ratio` must be a number >= 0 or None, got {ratio!r}")
        self.ckpts = CheckpointGradients(self.config["checkpoints"])
        self._projector: Projector | CountSketch | Tensor | None = None  # built on first use, for this p

    # ------------------------------------------------------------------ features
    def _kind(self, p: int) -> str:
        kind, k = self.config["projection"], self.config["projection_dim"]
        if kind == "orthogonal" and k > p:
            raise InvalidArgumentError(f"`projection='orthogonal'` needs projection_dim <= p = {p}, got {k}")
        return "none" if kind != "orthogonal" and k >= p else kind

    def _dim(self, p: int) -> int:
        return p if self._kind(p) == "none" else self.config["projection_dim"]

    def feature_dim(self, fm: FunctionalModel) -> int:
        self.p = fm.p
        return len(self.ckpts) * self._dim(fm.p)

    def features(self, fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                 targets: Tensor) -> Tensor:
        return torch.cat([self.project(g) for g in self.ckpts.grads(fm, fn, inputs, targets)], dim=1)

    def project(self, G: Tensor) -> Tensor:
        """φ(G) = G R for gradients G: Tensor[b, p] -> Tensor[b, k]."""
        p, k, seed = G.shape[1], self.config["projection_dim"], self.config["projection_seed"]
        kind = self._kind(p)
        if kind == "none":
            return G
        if kind == "orthogonal":
            if self._projector is None:
                gen = torch.Generator(device="cpu").manual_seed(seed)
                self._projector = torch.linalg.qr(torch.randn(p, k, generator=gen, dtype=torch.float64))[0]
            return G @ self._projector.to(G.device, G.dtype)
        if self._projector is None:
            self._projector = CountSketch(p, k, seed) if kind == "countsketch" else Projector(p, k, seed, dist=kind)
        return self._projector(G)

    # ------------------------------------------------------------------ fitting and solve
    def fit(self, curvature, damping: float | None, train_features: TrainFeatures) -> None:
        super().fit(curvature, damping, train_features)
        C, gram, n = len(self.ckpts), None, 0
        for block in train_features():
            blocks = block.to(torch.float64).reshape(len(block), C, -1).transpose(0, 1)  # [C, b, k]
            part = blocks.transpose(1, 2) @ blocks
            gram = part if gram is None else gram + part
            n += len(block)
        gram = gram / n
        k = gram.shape[-1]
        mean_eig = gram.diagonal(dim1=1, dim2=2).sum(dim=1) / k  # [C]
        if damping is None:
            ratio = DAMPING_RATIO if self.config["damping_ratio"] is None else self.config["damping_ratio"]
            lam = ratio * mean_eig
            source = f"auto: {ratio:g} × mean eigenvalue of ΦᵀΦ/n"
        else:
            lam = torch.full((C,), float(damping), dtype=gram.dtype, device=gram.device)
            source = "given"
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        self.load_state_dict({"eigenvalues": eigenvalues, "eigenvectors": eigenvectors, "damping": lam})
        self.diagnostics = {
            "projection": self._kind(self.p), "projection_dim": k, "checkpoints": C,
            "damping_per_checkpoint": lam.tolist(), "trak_damping_source": source,
            "fisher_mean_eigenvalue": mean_eig.tolist(),
        }

    def state_dict(self) -> dict[str, Tensor]:
        return {"eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors, "damping": self.lam}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.eigenvalues, self.eigenvectors, self.lam = state["eigenvalues"], state["eigenvectors"], state["damping"]
        self.damping = float(self.lam.mean())
        scale = 1.0 / len(self.lam) if self.config["ensemble"] == "mean" else 1.0
        self.inverse_eigenvalues = scale / (self.eigenvalues + self.lam[:, None])  # [C, k]

    def precondition(self, G: Tensor) -> Tensor:
        V = self.eigenvectors  # [C, k, k]
        blocks = G.to(V.dtype).reshape(G.shape[0], V.shape[0], -1).transpose(0, 1)  # [C, m, k]
        out = ((blocks @ V) * self.inverse_eigenvalues[:, None, :]) @ V.transpose(1, 2)
        return out.transpose(0, 1).reshape(G.shape)
