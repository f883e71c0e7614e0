"""Captum 0.9.0 (`captum.influence`): TracInCP, TracInCPFastRandProj, NaiveInfluenceFunction,
ArnoldiInfluenceFunction.

Workflow: each class takes the model, the training set and checkpoint *paths*; then
`influence((x, y))` returns Tensor[n_test, n_train] and `self_influence()` Tensor[n_train].
TracInCP, NaiveInfluenceFunction and ArnoldiInfluenceFunction recompute the training
gradients on every `influence` call (no index); TracInCPFastRandProj precomputes
projected last-layer gradients once (its `nearest_neighbors` index needs `annoy`).
NaiveInfluenceFunction and Arnoldi compute their (projected) Hessian in the constructor,
which is therefore part of "fit".

Library defaults kept: NaiveInfluenceFunction `projection_dim=50, hessian_reg=1e-6`;
ArnoldiInfluenceFunction `projection_dim=50, arnoldi_dim=200, hessian_reg=1e-3`;
TracInCP `sample_wise_grads_per_batch=False` (per-example loss, the library's default);
TracInCPFastRandProj `projection_dim=None` (last layer, no projection). The train loader
batch size is 256 (Captum's default of 1 is only a loader setting).

Sign: Captum's influence functions score `∇L(test)ᵀ H⁻¹ ∇L(train)` and TracIn
`Σ_c η_c ∇L(test)·∇L(train)`, positive = proponent: the same orientation as ours (with the
test loss replaced by our measurement through `test_loss_fn`), so no flip (checked by
test_adapters.py). TracInCPFastRandProj attributes the last Linear layer only and is given
the training loss on the test side too (see its `scores`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from adapters.base import Adapter, as_float_tensor

BATCH = 256


class _PerExample(nn.Module):
    """A per-example loss callable with Captum's expected `reduction` attribute."""

    def __init__(self, fn, reduction: str = "none"):
        super().__init__()
        self.fn, self.reduction = fn, reduction

    def forward(self, outputs, targets):
        values = self.fn(outputs, targets)
        return values if self.reduction == "none" else values.sum()


class _Captum(Adapter):
    tool = "Captum"

    def fit(self) -> None:
        p = self.problem
        self.model = self.model_copy()
        self.train = TensorDataset(p.X.to(p.dtype), p.y)
        self.checkpoint = self.save_checkpoint(self.model)
        self.instance = self.build()

    def build(self):
        raise NotImplementedError

    def _query(self, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return X.to(self.problem.dtype), y

    def scores(self, X: Tensor, y: Tensor) -> Tensor:
        return as_float_tensor(self.instance.influence(self._query(X, y), k=None))

    def self_influence(self) -> Tensor:
        return as_float_tensor(self.instance.self_influence())


def _load(model: nn.Module, path: str) -> float:
    """Captum checkpoint loader: a state_dict saved with torch.save, plus an optional learning rate."""
    state = torch.load(path, weights_only=True)
    lr = float(state.pop("__learning_rate__", torch.tensor(1.0)))
    model.load_state_dict(state)
    return lr


class TracInCP(_Captum):
    method = "TracInCP"
    defaults: ClassVar[dict[str, Any]] = {"sample_wise_grads_per_batch": False}
    sweep: ClassVar[list[dict[str, Any]]] = [{"sample_wise_grads_per_batch": True}]
    SIGN_NOTE = "Σ η ∇L(test)·∇L(train): same as ours"

    def build(self):
        from captum.influence import TracInCP as Cls

        p = self.problem
        paths, weights = [self.checkpoint], [1.0]
        if p.checkpoints:  # the training trajectory, weighted by its learning rates
            paths, weights = [], p.checkpoint_weights or [1.0] * len(p.checkpoints)
            for c, (state, lr) in enumerate(zip(p.checkpoints, weights)):
                path = self.workdir / f"ckpt{c}.pt"
                torch.save({**state, "__learning_rate__": torch.tensor(float(lr))}, path)
                paths.append(str(path))
        wise = self.settings["sample_wise_grads_per_batch"]
        reduction = "sum" if wise else "none"
        return Cls(self.model, self.train, paths, checkpoints_load_func=_load,
                   loss_fn=_PerExample(p.loss, reduction), test_loss_fn=_PerExample(p.measurement, reduction),
                   batch_size=BATCH, sample_wise_grads_per_batch=wise)


class TracInCPFastRandProj(_Captum):
    method = "TracInCPFastRandProj"
    defaults: ClassVar[dict[str, Any]] = {"projection_dim": None}
    sweep: ClassVar[list[dict[str, Any]]] = [{"projection_dim": k} for k in (16, 64)]
    indexes = True
    SIGN_NOTE = ("last-layer TracIn of the test loss: same as ours; for a margin measurement "
                 "ours = −score / (1 − p_y) (its margin `test_loss_fn` path disagrees with the margin gradient)")

    def build(self):
        from captum.influence import TracInCPFastRandProj as Cls

        p = self.problem
        last = [m for m in self.model.modules() if isinstance(m, nn.Linear)][-1]
        return Cls(self.model, last, self.train, [self.checkpoint], checkpoints_load_func=_load,
                   loss_fn=_PerExample(p.loss, "sum"), batch_size=BATCH,
                   projection_dim=self.settings["projection_dim"], seed=0)

    def scores(self, X: Tensor, y: Tensor) -> Tensor:
        """With a margin measurement, the test-loss scores are converted exactly: for cross-entropy
        loss = softplus(−margin), so ∇margin = −∇loss / (1 − p_y). (Passing the margin as
        `test_loss_fn` gives scores with r = −0.97 against the margin-gradient dot product on a
        toy problem in Captum 0.9.0, so it is not used.)"""
        s = super().scores(X, y)
        if self.problem.measurement_kind != "margin":
            return s
        with torch.no_grad():
            p_y = torch.softmax(self.model(X.to(self.problem.dtype)).double(), dim=1).gather(1, y[:, None])
        return -s / (1.0 - p_y).clamp_min(1e-12)


class NaiveInfluenceFunction(_Captum):
    method = "NaiveInfluenceFunction"
    defaults: ClassVar[dict[str, Any]] = {"projection_dim": 50, "hessian_reg": 1e-6}
    sweep: ClassVar[list[dict[str, Any]]] = [{"projection_dim": k, "hessian_reg": r}
                                             for k, r in ((50, 1e-3), (50, 1e-2), (400, 1e-6), (400, 1e-3), (400, 1e-2))]
    SIGN_NOTE = "∇L(test)ᵀ H⁻¹ ∇L(train): same as ours"
    max_params = 20_000  # it forms the full p×p Hessian before projecting

    def build(self):
        from captum.influence import NaiveInfluenceFunction as Cls

        p = self.problem
        k = min(self.settings["projection_dim"], p.n_params())
        return Cls(self.model, self.train, self.checkpoint, checkpoints_load_func=_load,
                   loss_fn=_PerExample(p.loss), test_loss_fn=_PerExample(p.measurement), batch_size=BATCH,
                   projection_dim=k, hessian_reg=self.settings["hessian_reg"], seed=0)


class ArnoldiInfluenceFunction(_Captum):
    method = "ArnoldiInfluenceFunction"
    defaults: ClassVar[dict[str, Any]] = {"projection_dim": 50, "arnoldi_dim": 200, "hessian_reg": 1e-3}
    sweep: ClassVar[list[dict[str, Any]]] = [{"projection_dim": k, "arnoldi_dim": max(200, 2 * k), "hessian_reg": r}
                                             for k, r in ((50, 1e-4), (50, 1e-2), (200, 1e-3), (200, 1e-2))]
    SIGN_NOTE = "∇L(test)ᵀ H⁻¹ ∇L(train) (top-k Arnoldi eigenpairs): same as ours"

    def build(self):
        from captum.influence._core.arnoldi_influence_function import ArnoldiInfluenceFunction as Cls

        p = self.problem
        return Cls(self.model, self.train, self.checkpoint, checkpoints_load_func=_load,
                   loss_fn=_PerExample(p.loss), test_loss_fn=_PerExample(p.measurement), batch_size=BATCH,
                   projection_dim=self.settings["projection_dim"], arnoldi_dim=self.settings["arnoldi_dim"],
                   hessian_reg=self.settings["hessian_reg"], seed=0)


ADAPTERS = [TracInCP, TracInCPFastRandProj, NaiveInfluenceFunction, ArnoldiInfluenceFunction]
