"""Kronfluence 1.0.1 (Grosse et al. 2023; github.com/pomonam/kronfluence): EK-FAC / K-FAC.

Workflow: `Analyzer.fit_all_factors` (covariances, eigendecomposition, eigenvalue
correction) once, then `compute_pairwise_scores` per query batch, which makes a pass over
the whole training set each time (no index), and `compute_self_scores`.

Library defaults kept here: strategy "ekfac", `damping_factor=1e-8` (tiny: not scaled to
the curvature), the true Fisher (labels sampled from the model, `use_empirical_fisher=False`),
float32 factors and scores. Every Linear layer is tracked (all parameters of our models).

Sign: Kronfluence's pairwise score is `∇f(test)ᵀ (G + λI)⁻¹ ∇L(train)` with f the
measurement and L the summed training loss, G the (EK-)FAC Fisher of the mean loss, with
no minus sign: the same orientation as ours (positive = helpful when f is the loss), so
no flip (checked by test_adapters.py).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from adapters.base import Adapter, as_float_tensor


def _task_class():
    from kronfluence.task import Task

    class ProblemTask(Task):
        """Summed training loss (sampled labels for the true Fisher) and summed measurement."""

        def __init__(self, loss, measurement):
            self.loss, self.measurement = loss, measurement

        def compute_train_loss(self, batch, model, sample=False):
            inputs, labels = batch
            outputs = model(inputs)
            if sample:
                with torch.no_grad():
                    labels = torch.multinomial(torch.softmax(outputs.detach(), dim=-1), 1).flatten()
            return self.loss(outputs, labels).sum()

        def compute_measurement(self, batch, model):
            inputs, labels = batch
            return self.measurement(model(inputs), labels).sum()

    return ProblemTask


class _Kronfluence(Adapter):
    tool = "Kronfluence"
    strategy: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {"damping_factor": 1e-8, "use_empirical_fisher": False}
    sweep: ClassVar[list[dict[str, Any]]] = [{"damping_factor": d} for d in (None, 1e-3, 1e-2, 1e-1)]
    SIGN = 1.0
    SIGN_NOTE = "∇f(test)ᵀ(G+λI)⁻¹∇L(train), no minus sign: same as ours"

    def fit(self) -> None:
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments

        p = self.problem
        torch.manual_seed(0)
        self.model = prepare_model(self.model_copy(), _task_class()(p.loss, p.measurement))
        self.analyzer = Analyzer(analysis_name="peers", model=self.model, task=_task_class()(p.loss, p.measurement),
                                 cpu=True, disable_tqdm=True, output_dir=str(self.workdir),
                                 log_level=logging.WARNING)
        self.train = TensorDataset(p.X.to(p.dtype), p.y)
        self.factor_args = FactorArguments(strategy=self.strategy,
                                           use_empirical_fisher=self.settings["use_empirical_fisher"])
        self.analyzer.fit_all_factors(factors_name="factors", dataset=self.train, per_device_batch_size=512,
                                      factor_args=self.factor_args, overwrite_output_dir=True)
        self._calls = 0

    def _score_args(self):
        from kronfluence.arguments import ScoreArguments

        return ScoreArguments(damping_factor=self.settings["damping_factor"])

    def scores(self, X: Tensor, y: Tensor) -> Tensor:
        self._calls += 1
        query = TensorDataset(X.to(self.problem.dtype), y)
        name = f"pairwise-{self._calls}"
        self.analyzer.compute_pairwise_scores(
            scores_name=name, factors_name="factors", query_dataset=query,
            train_dataset=self.train, per_device_query_batch_size=min(len(y), 128), per_device_train_batch_size=512,
            score_args=self._score_args(), overwrite_output_dir=True)
        return self.SIGN * as_float_tensor(self.analyzer.load_pairwise_scores(name)["all_modules"])

    def self_influence(self) -> Tensor:
        self.analyzer.compute_self_scores(
            scores_name="self", factors_name="factors", train_dataset=self.train, per_device_train_batch_size=512,
            score_args=self._score_args(), overwrite_output_dir=True)
        return as_float_tensor(self.analyzer.load_self_scores("self")["all_modules"])


class EKFAC(_Kronfluence):
    method = "EK-FAC"
    strategy = "ekfac"


class KFAC(_Kronfluence):
    method = "K-FAC"
    strategy = "kfac"


ADAPTERS = [EKFAC, KFAC]
