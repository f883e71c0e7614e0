"""influence-debugger itself, behind the same interface as the peers (the baseline rows)."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor

import influence as inf
from adapters.base import Adapter, Problem


class _ProblemTask(inf.ClassificationTask):
    """The problem's loss and measurement as an `influence.Task`."""

    def __init__(self, problem: Problem):
        super().__init__(weight_decay=problem.weight_decay)
        self._loss, self._measurement = problem.loss, problem.measurement

    def loss(self, outputs, targets):
        return self._loss(outputs, targets)

    def measurement(self, outputs, targets):
        return self._measurement(outputs, targets)


class Ours(Adapter):
    """`influence.Attributor(method=...)` at its defaults (the method is a setting)."""

    tool = "influence-debugger"
    method = "Attributor"
    defaults: ClassVar[dict[str, Any]] = {"method": "auto"}
    indexes = True
    SIGN_NOTE = "the reference convention"

    def __init__(self, problem: Problem, options: dict | None = None, **settings: Any):
        super().__init__(problem, **settings)
        self.options = dict(options or {})
        if self.settings["method"] == "tracin" and problem.checkpoints is not None:
            self.options.setdefault("checkpoints", problem.checkpoints)
            self.options.setdefault("weights", problem.checkpoint_weights)

    @classmethod
    def describe(cls, settings: dict[str, Any]) -> str:
        changed = "".join(f", {k}={v!r}" for k, v in (settings.get("options") or {}).items())
        return f"method={settings['method']!r}{changed}" + ("" if changed else " (defaults)")

    def task(self) -> inf.Task:
        if self.problem.loss is self.problem.measurement:
            return inf.ClassificationTask(weight_decay=self.problem.weight_decay)
        return _ProblemTask(self.problem)

    def fit(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", inf.InfluenceWarning)
            self.attr = inf.Attributor(self.problem.model, (self.problem.X, self.problem.y), task=self.task(),
                                       method=self.settings["method"], progress=False, **self.options).fit()

    def scores(self, X: Tensor, y: Tensor) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", inf.InfluenceWarning)
            return self.attr.scores((X.to(self.problem.dtype), y)).detach().to(torch.float64)

    def self_influence(self) -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", inf.InfluenceWarning)
            return self.attr.self_influence().detach().to(torch.float64)
