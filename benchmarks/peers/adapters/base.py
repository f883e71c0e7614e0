"""The common interface every peer adapter implements.

An adapter wraps one method of one library. It is built from a `Problem` (a trained model,
its training data, the per-example training loss, the test measurement) and a dict of
settings, then:

    adapter.fit()                      # everything that does not depend on the queries
    adapter.scores(X_test, y_test)     # Tensor[n_test, n_train], OUR sign convention
    adapter.self_influence()           # Tensor[n_train], high = suspicious (where supported)

Sign convention (the project's, see influence/attributor.py): removing train_i changes the
test measurement m(test_j) by about `+score[j, i] / n_train` (up to a positive factor that
a peer may scale differently). With m = the loss, positive = helpful (a proponent). Each
adapter states how its library's sign maps to this one (`SIGN_NOTE`) and
`benchmarks/peers/test_adapters.py` checks it against our exact influence on a small
convex problem.
"""

from __future__ import annotations

import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


class Unsupported(Exception):
    """The peer has no such operation (e.g. no self-influence); reported as "—", not a failure."""


@dataclass
class Problem:
    """A trained model and what it was trained on.

    Attributes:
        model: the trained model (eval mode). Adapters must not modify it (they copy).
        X, y: training inputs Tensor[n, ...] and integer labels LongTensor[n].
        loss: per-example training loss `(outputs, targets) -> Tensor[b]` (cross-entropy).
        measurement: per-example test measurement `(outputs, targets) -> Tensor[b]`.
        measurement_kind: "loss" or "margin" (log p_y − log Σ_{c≠y} p_c), for peers whose
            output function is fixed (TRAK) and to describe the task.
        weight_decay: the L2 coefficient of the training objective (mean loss + wd/2 ‖θ‖²).
        n_classes: number of classes.
        checkpoints: optional training trajectory, a list of state_dicts (TracIn-style peers).
        checkpoint_weights: their learning rates (same length), or None.
        workdir: a scratch folder the adapters may write to (peers that insist on disk).
    """

    model: nn.Module
    X: Tensor
    y: Tensor
    loss: Callable[[Tensor, Tensor], Tensor]
    measurement: Callable[[Tensor, Tensor], Tensor]
    measurement_kind: str
    weight_decay: float
    n_classes: int
    checkpoints: list[dict] | None = None
    checkpoint_weights: list[float] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="peers-")))

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class Adapter(ABC):
    """One method of one library behind `fit` / `scores` / `self_influence`.

    Class attributes:
        tool: the library ("Kronfluence", "TRAK", ...).
        method: the method within it ("EK-FAC", "TracInCP", ...).
        defaults: the library's defaults for the knobs this adapter exposes (what a user
            who changes nothing gets); `settings` override them.
        sweep: a small grid of settings tried to find the tuned setting (each dict
            overrides `defaults`).
        indexes: whether queries avoid a pass over the training data (an index exists).
        SIGN_NOTE: how the library's scores map to ours.
    """

    tool: ClassVar[str]
    method: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    sweep: ClassVar[list[dict[str, Any]]] = []
    indexes: ClassVar[bool] = False
    SIGN_NOTE: ClassVar[str] = ""

    def __init__(self, problem: Problem, **settings: Any):
        unknown = set(settings) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} for {self.tool} {self.method}; "
                             f"known: {sorted(self.defaults)}")
        self.problem = problem
        self.settings = {**self.defaults, **settings}
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.tool.lower()}-", dir=problem.workdir))

    @classmethod
    def describe(cls, settings: dict[str, Any]) -> str:
        """Short text for the table's setting column: the knobs that differ from the defaults."""
        changed = {k: v for k, v in settings.items() if cls.defaults.get(k, object()) != v}
        return ", ".join(f"{k}={_fmt(v)}" for k, v in changed.items()) or "defaults"

    def fit(self) -> None:
        """Everything that does not depend on the queries (factors, features, caches)."""

    @abstractmethod
    def scores(self, X: Tensor, y: Tensor) -> Tensor:
        """Tensor[n_test, n_train] in the project's sign convention (see the module docstring)."""

    def self_influence(self) -> Tensor:
        """Tensor[n_train], ∇ℓ(train_i)ᵀ (H + λI)⁻¹ ∇ℓ(train_i) or the library's analogue (high = suspicious)."""
        raise Unsupported(f"{self.tool} {self.method} has no self-influence")

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # helpers ---------------------------------------------------------------
    def model_copy(self, dtype: torch.dtype | None = None) -> nn.Module:
        """A copy of the model in eval mode (a bare layer is wrapped in `nn.Sequential`, which
        Kronfluence and dattri's EK-FAC need to find it), optionally cast to `dtype`."""
        import copy

        model = copy.deepcopy(self.problem.model).eval()
        if not list(model.children()):  # a bare layer (logistic regression): some peers need a container
            model = nn.Sequential(model)
        return model.to(dtype) if dtype is not None else model

    def save_checkpoint(self, model: nn.Module, name: str = "final.pt") -> str:
        path = self.workdir / name
        torch.save(model.state_dict(), path)
        return str(path)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def as_float_tensor(values: Any) -> Tensor:
    """A peer's output (numpy array, memmap, tensor) as a float64 CPU tensor, copied."""
    import numpy as np

    if isinstance(values, Tensor):
        return values.detach().cpu().to(torch.float64).clone()
    return torch.from_numpy(np.array(values, dtype=np.float64, copy=True))


def cross_entropy_margin(outputs: Tensor, targets: Tensor) -> Tensor:
    """log p_y − log Σ_{c≠y} p_c per example (the margin of TRAK and of benchmarks/lds.py)."""
    correct = outputs.gather(1, targets[:, None])[:, 0]
    others = outputs.scatter(1, targets[:, None], float("-inf"))
    return correct - torch.logsumexp(others, dim=1)
