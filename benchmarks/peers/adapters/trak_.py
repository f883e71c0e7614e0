"""TRAK 0.3.2 (`traker`; Park et al. 2023; github.com/MadryLab/trak).

Workflow: `featurize` every training batch, `finalize_features` (Φ(ΦᵀΦ + λI)⁻¹ stored
in memory-mapped files), then per query batch `start_scoring_checkpoint` → `score` →
`finalize_scores` (no pass over the training data: TRAK keeps an index).

On CPU TRAK uses its BasicProjector with a Gaussian matrix (the CUDA `fast_jl`
projector is not installed); projection dims <= 100 crash there (`BasicProjector` has no
`proj_matrix`), so the sweep stays >= 128. Library defaults kept: `proj_dim=2048`,
`use_half_precision=True` (float16 features), `lambda_reg=0`, one checkpoint (the model as
given), the image-classification output function (the margin log p/(1−p), with the
(1 − p) out-to-loss weighting on the training side). The model is run in float32 (TRAK
supports float16/float32 only).

Sign: TRAK's score τ[i, j] estimates how much *including* train_i raises test_j's margin
(positive = helpful). Ours is the change when *removing* train_i, so
- measurement = margin: ours = −τ;
- measurement = loss: loss = softplus(−margin), d loss = −(1 − p_y) d margin, so
  ours = (1 − p_y(test_j)) · τ (positive = helpful, as ours).
`finalize_scores` returns a numpy memmap [n_train, n_test]; it is copied and transposed.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor

from adapters.base import Adapter, as_float_tensor


class TRAK(Adapter):
    tool = "TRAK"
    method = "TRAKer"
    defaults: ClassVar[dict[str, Any]] = {"proj_dim": 2048, "lambda_reg": 0.0, "use_half_precision": True}
    sweep: ClassVar[list[dict[str, Any]]] = [
        {"proj_dim": k, "lambda_reg": lam, "use_half_precision": False}
        for k in (512, 2048) for lam in (1e-2, 1e-1, 1.0)]
    indexes = True
    SIGN_NOTE = "τ = effect of including train_i on the test margin: ours = −τ (margin), (1 − p_y)·τ (loss)"
    batch_size = 256

    def fit(self) -> None:
        from trak import TRAKer

        p = self.problem
        if p.measurement_kind not in ("loss", "margin"):
            raise ValueError(f"TRAK's output function is the margin; cannot score {p.measurement_kind!r}")
        self.model = self.model_copy(torch.float32)
        self.traker = TRAKer(model=self.model, task="image_classification", train_set_size=p.n,
                             save_dir=str(self.workdir / "trak"), device="cpu",
                             proj_dim=self.settings["proj_dim"], lambda_reg=self.settings["lambda_reg"],
                             use_half_precision=self.settings["use_half_precision"], logging_level=logging.ERROR)
        self.checkpoint = self.model.state_dict()
        self.traker.load_checkpoint(self.checkpoint, model_id=0)
        X = p.X.to(torch.float32)
        for lo in range(0, p.n, self.batch_size):
            self.traker.featurize(batch=[X[lo:lo + self.batch_size], p.y[lo:lo + self.batch_size]],
                                  num_samples=len(p.y[lo:lo + self.batch_size]))
        self.traker.finalize_features()
        self._calls = 0

    def _tau(self, X: Tensor, y: Tensor) -> Tensor:
        """TRAK's scores transposed: Tensor[n_test, n_train]."""
        self._calls += 1
        name = f"query{self._calls}"
        X = X.to(torch.float32)
        self.traker.start_scoring_checkpoint(exp_name=name, checkpoint=self.checkpoint, model_id=0,
                                             num_targets=len(y))
        for lo in range(0, len(y), self.batch_size):
            self.traker.score(batch=[X[lo:lo + self.batch_size], y[lo:lo + self.batch_size]],
                              num_samples=len(y[lo:lo + self.batch_size]))
        return as_float_tensor(self.traker.finalize_scores(exp_name=name)).T

    def scores(self, X: Tensor, y: Tensor) -> Tensor:
        tau = self._tau(X, y)
        if self.problem.measurement_kind == "margin":
            return -tau
        with torch.no_grad():
            p_y = torch.softmax(self.model(X.to(torch.float32)).double(), dim=1).gather(1, y[:, None])
        return (1.0 - p_y) * tau

    def self_influence(self) -> Tensor:
        """TRAK has no self-influence call: the diagonal of the training set scored against itself
        (loss orientation, (1 − p_y)·τ[i, i]), in blocks."""
        p = self.problem
        out = []
        block = 512
        saved_kind = p.measurement_kind
        try:
            p.measurement_kind = "loss"
            for lo in range(0, p.n, block):
                s = self.scores(p.X[lo:lo + block], p.y[lo:lo + block])
                out.append(s[torch.arange(s.shape[0]), torch.arange(lo, lo + s.shape[0])])
        finally:
            p.measurement_kind = saved_kind
        return torch.cat(out)


ADAPTERS = [TRAK]
