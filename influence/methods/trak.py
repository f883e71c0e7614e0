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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from influence.damping import Damping
from influence.gradients import CheckpointGradients
from influence.linalg import eigh
from influence.methods.base import Method, TrainFeatures, register
from influence.model import FunctionalModel
from influence.options import check_choice, check_int
from influence.projection import PROJECTIONS, GradientProjection

# Default λ_c as a multiple of the mean eigenvalue of Φ_cᵀΦ_c/n. The projected empirical Fisher
# is singular when k > n and ill-conditioned otherwise. Chosen on the digits MLP LDS benchmark
# (benchmarks/lds.py --sweep): ratio 1 was best for k = 512, 1024 and 2048 among 0.01 … 30
# (k = 2048: 0.36 at 0.01, 0.52 at 0.1, 0.645 at 1, 0.57 at 10).
DAMPING_RATIO = 1.0


@dataclass(frozen=True)
class TRAKOptions:
    """Options of `method="trak"`.

    Attributes:
        projection_dim: k, the projected dimension per checkpoint (default 2048). When
            k >= p a random projection can only distort the geometry, so the gradients are
            used unprojected (see `diagnostics["projection"]`).
        projection: "rademacher" (default; ±1/√k entries) or "gaussian" (N(0, 1/k)), both the
            seeded `kernels.project` matrices (generated on the fly on GPU, cached on CPU);
            "countsketch" (each gradient coordinate added with a random sign to one of k
            buckets: O(p) per example, no p×k matrix); "orthogonal" (k ≤ p orthonormal
            columns, materialises p×k: small p only); or "none".
        projection_seed: seed of R (the same R for train and test, and for every checkpoint).
        checkpoints: list of `state_dict()`s of the model to ensemble over; `None` uses the
            model as given. Index features are concatenated per checkpoint: [n, C·k].
        ensemble: "mean" (default) or "sum" of the per-checkpoint scores.
    The damping: `Attributor(damping=λ)`, or `damping_ratio` × trace(Φ_cᵀΦ_c/n)/k per
    checkpoint (default ratio `DAMPING_RATIO`).
    """

    projection_dim: int = 2048
    projection: str = "rademacher"
    projection_seed: int = 0
    checkpoints: Any = None
    ensemble: str = "mean"

    def __post_init__(self):
        check_int(self.projection_dim, "projection_dim")
        check_choice(self.projection, "projection", (*PROJECTIONS, "none"))
        check_int(self.projection_seed, "projection_seed", minimum=0)
        check_choice(self.ensemble, "ensemble", ("mean", "sum"))
        CheckpointGradients(self.checkpoints)  # validates the list


@register
class TRAK(Method):
    """Projected per-example gradients, block-diagonal `(ΦᵀΦ/n + λI)⁻¹` over checkpoints."""

    name = "trak"
    Options = TRAKOptions
    uses_curvature = False

    def __init__(self, **options):
        super().__init__(**options)
        self.ckpts = CheckpointGradients(self.options.checkpoints)
        o = self.options
        self.project = GradientProjection(o.projection, o.projection_dim, o.projection_seed)

    # ------------------------------------------------------------------ features
    def feature_dim(self, fm: FunctionalModel) -> int:
        return len(self.ckpts) * self.project.dim(fm.p)

    def features(self, fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs: Any,
                 targets: Tensor) -> Tensor:
        return torch.cat([self.project(g) for g in self.ckpts.grads(fm, fn, inputs, targets)], dim=1)

    # ------------------------------------------------------------------ fitting and solve
    def fit(self, fm: FunctionalModel, curvature, damping: Damping, train_features: TrainFeatures) -> dict[str, Any]:
        C, gram, n = len(self.ckpts), None, 0
        for block in train_features():
            blocks = block.to(torch.float64).reshape(len(block), C, -1).transpose(0, 1)  # [C, b, k]
            part = blocks.transpose(1, 2) @ blocks
            gram = part if gram is None else gram + part
            n += len(block)
        gram = gram / n
        k = gram.shape[-1]
        mean_eig = gram.diagonal(dim1=1, dim2=2).sum(dim=1) / k  # [C]
        what = "mean eigenvalue of ΦᵀΦ/n"
        ratios = (DAMPING_RATIO, DAMPING_RATIO)  # TRAK's own curvature: one default for any model
        lam = torch.tensor([damping.resolve(lambda: float(m), what, ratios)[0] for m in mean_eig], dtype=gram.dtype)
        source = "given" if damping.value is not None else \
            f"auto: {damping.effective_ratio(ratios):g} × {what}, per checkpoint"
        eigenvalues, eigenvectors = eigh(gram)
        self.restore({"eigenvalues": eigenvalues, "eigenvectors": eigenvectors, "damping": lam}, None)
        return {"damping_source": source, "projection": self.project.kind_for(fm.p), "projection_dim": k,
                "checkpoints": C, "damping_per_checkpoint": lam.tolist(), "fisher_mean_eigenvalue": mean_eig.tolist()}

    def state_dict(self) -> dict[str, Tensor]:
        return {"eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors, "damping": self.lam}

    def restore(self, state: dict[str, Tensor], curvature) -> None:
        self.eigenvalues, self.eigenvectors, self.lam = state["eigenvalues"], state["eigenvectors"], state["damping"]
        self.damping = float(self.lam.mean())
        scale = 1.0 / len(self.lam) if self.options.ensemble == "mean" else 1.0
        self.inverse_eigenvalues = scale / (self.eigenvalues + self.lam[:, None])  # [C, k]

    def precondition(self, G: Tensor) -> tuple[Tensor, None]:
        V = self.eigenvectors  # [C, k, k]
        blocks = G.to(V.dtype).reshape(G.shape[0], V.shape[0], -1).transpose(0, 1)  # [C, m, k]
        out = ((blocks @ V) * self.inverse_eigenvalues[:, None, :]) @ V.transpose(1, 2)
        return out.transpose(0, 1).reshape(G.shape), None
