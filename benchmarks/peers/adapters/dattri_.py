"""dattri 0.3.0 (github.com/TRAIS-Lab/dattri): influence-function attributors (Explicit, CG,
LiSSA, Arnoldi, DataInf, EK-FAC), TRAK and TracIn.

Workflow: `AttributionTask(loss_func, model, checkpoints, target_func)`; an attributor;
`cache(full_train_loader)`; `attribute(train_loader, test_loader)` ->
Tensor[n_train, n_test] (transposed here); `self_attribute(train_loader)` -> Tensor[n_train].
The IF attributors recompute the training gradients on every `attribute` call and redo
the inverse-Hessian-vector product for each (train batch, test batch) pair, so the
training set is passed as one batch where memory allows (`TRAIN_BATCH`). The curvature
(Explicit, CG, LiSSA) is of the loss over `cache`'s loader: one full batch, so H is the
Hessian of the mean training loss (no weight decay; `regularization` adds λI).

Models and data run in float32 (several attributors build float32 buffers and fail on a
float64 model). Library defaults kept: Explicit/CG/DataInf `regularization=0`, CG `max_iter=10`; LiSSA
`damping=0, scaling=50, recursion_depth=5000, batch_size=1`; Arnoldi `proj_dim=100,
max_iter=100, regularization=0` (known to return all NaN at these defaults: that is
recorded, not hidden); EK-FAC `damping=0`; TRAK `proj_dim=512, regularization=0` with the
margin output of dattri's TRAK example; TracIn `proj_dim=512`, unnormalised gradients.
dattri's `DEFAULT_PROJECTOR_KWARGS` is a module-level dict that attributors update in
place, so every adapter passes the full projector settings explicitly.

Sign: the IF attributors return `∇L(train)ᵀ H⁻¹ ∇f(test)` and TracIn `Σ w ∇L(train)·∇f(test)`
(f = `target_func`, our measurement), with no minus sign: the same orientation as ours. TRAK
is given the margin as its training-side output (as in dattri's TRAK example) and our
measurement as target: its score is the effect of *including* train_i on the target, so
ours = −score (checked by test_adapters.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from adapters.base import Adapter, as_float_tensor

TRAIN_BATCH = 2048  # train examples per batch in attribute(); the iHVP is redone per batch
TEST_BATCH = 10     # LiSSA at its defaults ran out of memory on 360 queries in one batch
DTYPE = torch.float32  # several attributors mix float32 buffers with the model's dtype (float64 fails)


class _Dattri(Adapter):
    tool = "dattri"
    SIGN = 1.0
    SIGN_NOTE = "∇L(train)ᵀ H⁻¹ ∇f(test), no minus sign: same as ours"

    def _funcs(self, model):
        p = self.problem
        ndim = p.X.dim() - 1  # dimensions of one unbatched input

        def batchify(x, y):  # y.long(): LiSSA's collate function turns labels into floats
            return (x.unsqueeze(0), y.reshape(1).long()) if x.dim() == ndim else (x, y.reshape(-1).long())

        def loss_func(params, data):
            x, y = batchify(*data)
            return p.loss(torch.func.functional_call(model, params, (x,)), y).mean()

        def target_func(params, data):
            x, y = batchify(*data)
            return p.measurement(torch.func.functional_call(model, params, (x,)), y).mean()

        return loss_func, target_func

    def fit(self) -> None:
        from dattri.task import AttributionTask

        p = self.problem
        self.model = self.model_copy(DTYPE)
        loss_func, target_func = self._funcs(self.model)
        self.task = AttributionTask(loss_func=self.train_func(loss_func), model=self.model,
                                    checkpoints=self.model.state_dict(), target_func=target_func)
        self.train = TensorDataset(p.X.to(DTYPE), p.y)
        self.full_loader = DataLoader(self.train, batch_size=p.n, shuffle=False)
        self.train_loader = DataLoader(self.train, batch_size=min(p.n, TRAIN_BATCH), shuffle=False)
        self.attributor = self.build()
        self.cache()

    def train_func(self, loss_func):
        return loss_func

    def cache(self) -> None:
        self.attributor.cache(self.full_loader)

    def build(self):
        raise NotImplementedError

    def scores(self, X: Tensor, y: Tensor) -> Tensor:
        test = DataLoader(TensorDataset(X.to(DTYPE), y), batch_size=TEST_BATCH, shuffle=False)
        return self.SIGN * as_float_tensor(self.attributor.attribute(self.train_loader, test)).T

    def self_influence(self) -> Tensor:
        return self.SIGN * as_float_tensor(self.attributor.self_attribute(self.train_loader))


class Explicit(_Dattri):
    method = "IFAttributorExplicit"
    defaults: ClassVar[dict[str, Any]] = {"regularization": 0.0}
    sweep: ClassVar[list[dict[str, Any]]] = [{"regularization": r} for r in (1e-4, 1e-3, 1e-2, 1e-1)]
    max_params = 20_000  # an explicit p×p Hessian and its inverse

    def build(self):
        from dattri.algorithm.influence_function import IFAttributorExplicit

        return IFAttributorExplicit(self.task, regularization=self.settings["regularization"])


class CG(_Dattri):
    method = "IFAttributorCG"
    defaults: ClassVar[dict[str, Any]] = {"regularization": 0.0, "max_iter": 10}
    sweep: ClassVar[list[dict[str, Any]]] = [{"regularization": r, "max_iter": 100} for r in (1e-3, 1e-2, 1e-1)]

    def build(self):
        from dattri.algorithm.influence_function import IFAttributorCG

        return IFAttributorCG(self.task, regularization=self.settings["regularization"],
                              max_iter=self.settings["max_iter"])


class LiSSA(_Dattri):
    method = "IFAttributorLiSSA"
    defaults: ClassVar[dict[str, Any]] = {"damping": 0.0, "scaling": 50.0, "recursion_depth": 5000,
                                          "batch_size": 1}
    sweep: ClassVar[list[dict[str, Any]]] = [{"damping": d, "recursion_depth": 1000, "batch_size": 64}
                                             for d in (1e-2, 1e-1)]

    def build(self):
        from dattri.algorithm.influence_function import IFAttributorLiSSA

        return IFAttributorLiSSA(self.task, **self.settings)


class Arnoldi(_Dattri):
    method = "IFAttributorArnoldi"
    defaults: ClassVar[dict[str, Any]] = {"proj_dim": 100, "max_iter": 100, "regularization": 0.0}
    sweep: ClassVar[list[dict[str, Any]]] = [{"proj_dim": k, "max_iter": 2 * k, "regularization": r}
                                             for k in (50, 200) for r in (1e-3, 1e-2)]

    def build(self):
        from dattri.algorithm.influence_function import IFAttributorArnoldi

        return IFAttributorArnoldi(self.task, **self.settings)


class DataInf(_Dattri):
    method = "IFAttributorDataInf"
    defaults: ClassVar[dict[str, Any]] = {"regularization": 0.0}
    sweep: ClassVar[list[dict[str, Any]]] = [{"regularization": r} for r in (1e-3, 1e-2, 1e-1)]

    def build(self):
        from dattri.algorithm.influence_function import IFAttributorDataInf

        return IFAttributorDataInf(self.task, regularization=self.settings["regularization"])


class EKFAC(_Dattri):
    method = "IFAttributorEKFAC"
    defaults: ClassVar[dict[str, Any]] = {"damping": 0.0}
    sweep: ClassVar[list[dict[str, Any]]] = [{"damping": d} for d in (1e-3, 1e-2, 1e-1)]

    def build(self):
        from dattri.algorithm.influence_function import IFAttributorEKFAC

        return IFAttributorEKFAC(self.task, damping=self.settings["damping"])

    def cache(self) -> None:
        self.attributor.cache(self.train_loader)


class TRAK(_Dattri):
    method = "TRAKAttributor"
    defaults: ClassVar[dict[str, Any]] = {"proj_dim": 512, "regularization": 0.0}
    sweep: ClassVar[list[dict[str, Any]]] = [{"proj_dim": k, "regularization": r}
                                             for k in (512, 2048) for r in (1e-3, 1e-2)]
    indexes = True
    SIGN = -1.0
    SIGN_NOTE = "effect of including train_i on the target (TRAK): ours = −score"

    def train_func(self, loss_func):
        """dattri's TRAK example: the training-side output is the margin log p/(1 − p)."""
        ndim = self.problem.X.dim() - 1
        model = self.model

        def margin(params, data):
            x, y = data
            if x.dim() == ndim:
                x, y = x.unsqueeze(0), y.reshape(1)
            out = torch.func.functional_call(model, params, (x,))
            logp = -torch.nn.functional.cross_entropy(out, y)
            return logp - torch.log(1 - torch.exp(logp))

        return margin

    def build(self):
        from dattri.algorithm.trak import TRAKAttributor

        ndim = self.problem.X.dim() - 1
        model = self.model

        def correct_probability(params, data):
            x, y = data
            if x.dim() == ndim:
                x, y = x.unsqueeze(0), y.reshape(1)
            out = torch.func.functional_call(model, params, (x,))
            return torch.exp(-torch.nn.functional.cross_entropy(out, y))

        projector = {"proj_dim": self.settings["proj_dim"], "proj_max_batch_size": 32, "proj_seed": 0,
                     "device": "cpu"}
        return TRAKAttributor(self.task, correct_probability, projector_kwargs=projector,
                              regularization=self.settings["regularization"])

    def cache(self) -> None:
        self.attributor.cache(self.train_loader)

    def scores(self, X: Tensor, y: Tensor) -> Tensor:
        test = DataLoader(TensorDataset(X.to(DTYPE), y), batch_size=TEST_BATCH, shuffle=False)
        return self.SIGN * as_float_tensor(self.attributor.attribute(test)).T

    def self_influence(self) -> Tensor:
        """The diagonal of the training set scored against itself: `self_attribute` fails after
        `cache()` (dattri 0.3.0 sets its test loader to the `None` it was given)."""
        p = self.problem
        return torch.cat([self.scores(p.X[lo:lo + 512], p.y[lo:lo + 512]).diagonal(lo)
                          for lo in range(0, p.n, 512)])


class TracIn(_Dattri):
    method = "TracInAttributor"
    defaults: ClassVar[dict[str, Any]] = {"proj_dim": 512, "normalized_grad": False}
    sweep: ClassVar[list[dict[str, Any]]] = [{"proj_dim": 2048}, {"normalized_grad": True}]

    def fit(self) -> None:
        from dattri.task import AttributionTask

        p = self.problem
        self.model = self.model_copy(DTYPE)
        loss_func, target_func = self._funcs(self.model)
        checkpoints = p.checkpoints or [self.model.state_dict()]
        weights = p.checkpoint_weights if p.checkpoints and p.checkpoint_weights else [1.0] * len(checkpoints)
        self.task = AttributionTask(loss_func=loss_func, model=self.model, checkpoints=list(checkpoints),
                                    target_func=target_func)
        self.train = TensorDataset(p.X.to(DTYPE), p.y)
        self.train_loader = DataLoader(self.train, batch_size=min(p.n, TRAIN_BATCH), shuffle=False)
        from dattri.algorithm.tracin import TracInAttributor

        projector = {"proj_dim": self.settings["proj_dim"], "proj_max_batch_size": 32, "proj_seed": 0,
                     "device": "cpu"}
        self.attributor = TracInAttributor(self.task, weight_list=torch.tensor(weights, dtype=DTYPE),
                                           normalized_grad=self.settings["normalized_grad"],
                                           projector_kwargs=projector)

    def scores(self, X: Tensor, y: Tensor) -> Tensor:
        test = DataLoader(TensorDataset(X.to(DTYPE), y), batch_size=TEST_BATCH, shuffle=False)
        return as_float_tensor(self.attributor.attribute(self.train_loader, test)).T

    def self_influence(self) -> Tensor:
        return as_float_tensor(self.attributor.self_attribute(self.train_loader))


ADAPTERS = [Explicit, CG, LiSSA, Arnoldi, DataInf, EKFAC, TRAK, TracIn]
