"""Replay: exact attribution of one training run by metagradients (MAGIC-style reverse mode).

Training is re-run as a pure function of every training example's weight w_i (all 1 in
the real run: see `recipe.py` for the objective). For a test measurement m_j of the final
model, `Replay.scores` returns the derivative of m_j through every optimiser step,

    score[j, i] = −n_train · ∂m_j(θ_T) / ∂w_i        (Tensor[n_test, n_train]),

exact for this run up to rounding. The library's sign convention holds: removing train_i
(w_i: 1 → 0) changes m_j by about +score[j, i] / n_train, so with the loss as the
measurement, positive = helpful.

Cost, with T optimiser steps and √T-spaced checkpoints: `fit` is one training run (it
re-runs it, keeping ⌈T/K⌉ checkpoints of θ and the optimiser state, K = checkpoint_every);
`scores` recomputes each K-step segment from its checkpoint (one more training run) and
walks it backwards with one vector-Jacobian product per step, batched over the test
points — measured 0.5-1.2 training runs per test point (MLPs on digits and MNIST-5k, one
CPU thread), plus the two passes. Memory: the checkpoints, K states, and the cotangents
(3 × n_test × p values for Adam, 2 for SGD).

The derivative is exact; how well it predicts *retraining* on a subset depends on the run
(`subset_linearity`): heavy-ball SGD runs respond almost linearly to example weights,
Adam runs much less (`benchmarks/replay_lds.py`, `benchmarks/replay_linearity.py`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from influence.batching import take, to_model
from influence.data import as_data
from influence.errors import InvalidArgumentError, NotFittedError
from influence.lds import subset_masks
from influence.model import FunctionalModel
from influence.replay import determinism
from influence.replay.recipe import TrainingRecipe
from influence.storage import atomic_write
from influence.task import ClassificationTask, Task
from influence.training import objective

Checkpoint = tuple[Tensor, tuple[Tensor, ...]]


class Replay:
    """Attribute a replayable training run exactly (`fit()`, then `scores(test)`).

    Args:
        initial_model: the model as it was before training (its initialisation); not modified.
        train: the training data, any form `Attributor` accepts (tensors `(X, y)`, a
            `datasets.Dataset`, a torch `Dataset`), in the order the recipe indexes it.
        recipe: the `TrainingRecipe` the run used.
        task: loss, measurement and weight decay (default `ClassificationTask()`); its
            `weight_decay` is the L2 term of the training objective. The run trains every
            trainable parameter, so `task.parameters` plays no part (the derivative is with
            respect to example weights, not parameters).
        trained: the model the run produced (optional); `fit` then checks that the replay
            reproduces it (relative parameter error ≤ `tolerance`), else raises
            `NonDeterministicError`.
        checkpoint_every: steps between checkpoints (default ⌈√T⌉).
        checkpoint_dir: keep the checkpoints as safetensors files in this folder instead
            of memory.
        chunk_size: test points per batched vector-Jacobian product (memory vs speed).
        tolerance: see `trained`; default 1e-6 in float64, 1e-3 in float32.
        weights: Tensor[n_train], the example weights w at which the run is replayed and
            differentiated (default all 1: the actual run). `weights = mask / mask.mean()`
            replays full-batch training on the subset `mask` (the same objective: the mean
            loss over the subset).
    """

    def __init__(
        self,
        initial_model: nn.Module,
        train: Any,
        recipe: TrainingRecipe,
        task: Task | None = None,
        trained: nn.Module | None = None,
        checkpoint_every: int | None = None,
        checkpoint_dir: str | Path | None = None,
        chunk_size: int = 64,
        tolerance: float | None = None,
        weights: Tensor | None = None,
    ):
        if not isinstance(recipe, TrainingRecipe):
            raise InvalidArgumentError(
                f"`recipe` must be an influence.replay.TrainingRecipe, got {recipe!r}"
            )
        if checkpoint_every is not None and (
            not isinstance(checkpoint_every, int) or checkpoint_every < 1
        ):
            raise InvalidArgumentError(
                f"`checkpoint_every` must be a positive integer, got {checkpoint_every!r}"
            )
        self.task = task or ClassificationTask()
        self.recipe, self.trained, self.chunk_size = recipe, trained, chunk_size
        self.checkpoint_every, self.checkpoint_dir = checkpoint_every, checkpoint_dir
        self.train, self.weights = train, weights
        self.fm = FunctionalModel(
            initial_model, None, forward=self.task.forward, in_eval_mode=False
        )
        self.measure_fm = FunctionalModel(initial_model, None, forward=self.task.forward)
        self.tolerance = (
            tolerance
            if tolerance is not None
            else (1e-6 if self.fm.dtype == torch.float64 else 1e-3)
        )
        self.diagnostics: dict = {}
        self.final: Tensor | None = None

    def fit(self) -> Replay:
        """Re-run training once, keeping checkpoints; check it against `trained`. Returns self."""
        determinism.check(self.fm.model, self.train, self.fm.device)
        data = as_data(self.train, "train")
        self.n = len(data)
        X, y = data.batch(range(self.n))
        self.X, self.y = to_model(X, self.fm.device, self.fm.dtype), y.to(self.fm.device)
        self.w = self._point(self.weights)
        self.total = self.recipe.steps(self.n)
        self.every = self.checkpoint_every or max(1, math.isqrt(self.total - 1) + 1)
        self._checkpoints: list = []
        start = time.perf_counter()
        theta, state = self.fm.theta, self.recipe.init_state(self.fm.theta)
        for t, rows in enumerate(self.recipe.batches(self.n)):
            if t % self.every == 0:
                self._save(t // self.every, theta, state)
            theta, state = self._step(theta, state, self.w[rows], rows, t)
        self.final = theta.detach()
        error = None
        if self.trained is not None:
            trained = FunctionalModel(self.trained, None).theta.to(self.final)
            error = determinism.reproduction_error(self.final, trained)
            determinism.check_reproduction(error, self.tolerance)
        stored = (
            len(self._checkpoints) * (1 + len(state)) * self.fm.p * self.fm.theta.element_size()
        )
        self.diagnostics = {
            "method": "replay",
            "steps": self.total,
            "checkpoint_every": self.every,
            "checkpoints": len(self._checkpoints),
            "checkpoint_bytes": stored,
            "checkpoint_dir": None if self.checkpoint_dir is None else str(self.checkpoint_dir),
            "forward_seconds": time.perf_counter() - start,
            "reproduction_error": error,
            "recipe": self.recipe,
        }
        return self

    def scores(self, test: Any) -> Tensor:
        """Tensor[n_test, n_train]: score[j, i] = −n_train · ∂m_j(θ_T)/∂w_i through the whole run.

        Removing train_i changes test_j's measurement by about +score[j, i] / n_train
        (positive = helpful when the measurement is the loss).
        """
        if self.final is None:
            raise NotFittedError("call Replay.fit() before scores()")
        data = as_data(test, "test")
        Xt, yt = data.batch(range(len(data)))
        Xt, yt = to_model(Xt, self.fm.device, self.fm.dtype), yt.to(self.fm.device)
        measure = lambda th: self.task.measurement(self.measure_fm(th, Xt), yt)
        theta_bar = torch.func.jacrev(measure)(self.final)  # [m, p]
        state_bar = tuple(torch.zeros_like(theta_bar) for _ in self.recipe.init_state(self.final))
        weight_bar = torch.zeros(
            theta_bar.shape[0], self.n, dtype=theta_bar.dtype, device=theta_bar.device
        )
        batches = list(self.recipe.batches(self.n))
        for segment in reversed(range(len(self._checkpoints))):
            first = segment * self.every
            states = self._recompute(segment, batches[first : first + self.every])
            for t in reversed(range(first, first + len(states))):
                theta_bar, state_bar, rows_bar = self._step_vjp(
                    states[t - first], batches[t], t, theta_bar, state_bar
                )
                weight_bar.index_add_(1, batches[t].to(weight_bar.device), rows_bar)
        return -self.n * weight_bar.detach()

    def parameter_change(self, delta: Tensor) -> Tensor:
        """Tensor[p]: the exact first-order change of the final parameters when the example
        weights move by `delta` (Tensor[n_train]), d θ_T / d w · delta, by forward mode through
        the whole run (about three training runs; memory O(p), no checkpoints).

        E.g. removing the rows R from a full-batch run that averages over the kept rows:
        delta = −1 on R and |R| / (n − |R|) elsewhere. The parameters are in the order of
        `influence.model.FunctionalModel(model)` (every trainable parameter).
        """
        if self.final is None:
            raise NotFittedError("call Replay.fit() before parameter_change()")
        delta = torch.as_tensor(delta)
        if delta.shape != (self.n,) or not torch.isfinite(delta).all():
            raise InvalidArgumentError(
                f"`delta` must be a finite Tensor[{self.n}] (one per training example), "
                f"got shape {tuple(delta.shape)}"
            )
        delta = delta.to(self.fm.device, self.fm.dtype)
        theta, state = self.fm.theta, self.recipe.init_state(self.fm.theta)
        tangent = (torch.zeros_like(theta), tuple(torch.zeros_like(s) for s in state))
        for t, rows in enumerate(self.recipe.batches(self.n)):
            step = lambda th, st, w, rows=rows, t=t: self._step(th, st, w, rows, t)
            (theta, state), tangent = torch.func.jvp(
                step, (theta, state, self.w[rows]), (*tangent, delta[rows])
            )
        return tangent[0].detach()

    def subset_linearity(self, fraction: float = 0.5, seed: int = 0) -> float:
        """How well the first-order replay predicts training on a random subset: in [-1, 1].

        Draws a `fraction` subset S, re-runs training on it (weights 1_S / fraction, each
        subset example's loss averaged over S) and returns the cosine between the actual
        change of the final parameters and `parameter_change` of the same weight change.
        Near 1: the run responds almost linearly to example weights ("metasmooth"), and the
        scores predict retraining on such subsets; measured on digits 0.96 for heavy-ball SGD,
        0.39-0.55 for Adam. Costs about four training runs.
        """
        if self.final is None:
            raise NotFittedError("call Replay.fit() before subset_linearity()")
        mask = subset_masks(self.n, 1, fraction, seed)[0].to(self.fm.device, self.fm.dtype)
        delta = mask / mask.mean() - self.w
        theta, state = self.fm.theta, self.recipe.init_state(self.fm.theta)
        for t, rows in enumerate(self.recipe.batches(self.n)):
            theta, state = self._step(theta, state, (self.w + delta)[rows], rows, t)
        actual, predicted = theta.detach() - self.final, self.parameter_change(delta)
        return float(torch.nn.functional.cosine_similarity(actual, predicted, dim=0))

    def _point(self, weights: Tensor | None) -> Tensor:
        """The example weights as Tensor[n] in the model's dtype (all 1 by default), checked."""
        if weights is None:
            return torch.ones(self.n, dtype=self.fm.dtype, device=self.fm.device)
        weights = torch.as_tensor(weights)
        if weights.shape != (self.n,) or not torch.isfinite(weights).all() or (weights < 0).any():
            raise InvalidArgumentError(
                f"`weights` must be a Tensor[{self.n}] (one per training example) of finite "
                f"values >= 0, got shape {tuple(weights.shape)}"
            )
        return weights.to(self.fm.device, self.fm.dtype)

    def _step(
        self, theta: Tensor, state: tuple, weights: Tensor | None, rows: Tensor, t: int
    ) -> tuple:
        """θ_{t+1}, state_{t+1} from θ_t, state_t; `weights` (Tensor[b]) weigh the batch `rows`."""
        full = self.recipe.batch_size is None
        inputs, targets = (self.X, self.y) if full else (take(self.X, rows), self.y[rows])
        grad = torch.func.grad(
            lambda th: objective(self.fm, self.task, th, inputs, targets, weights)
        )(theta)
        return self.recipe.step(theta, state, grad, self.recipe.lr_at(t, self.total), t + 1)

    def _step_vjp(
        self, checkpoint: Checkpoint, rows: Tensor, t: int, theta_bar: Tensor, state_bar: tuple
    ) -> tuple:
        """Pull step t's output cotangents [m, p] back to its inputs and example weights [m, b]."""
        theta, state = checkpoint
        _, pull = torch.func.vjp(
            lambda th, st, w: self._step(th, st, w, rows, t), theta, state, self.w[rows]
        )
        theta_bar, state_bar, rows_bar = torch.func.vmap(pull, chunk_size=self.chunk_size)(
            (theta_bar, state_bar)
        )
        return theta_bar, state_bar, rows_bar

    def _recompute(self, segment: int, batches: list[Tensor]) -> list[Checkpoint]:
        """The (θ_t, state_t) of every step of a segment, re-run from its checkpoint."""
        theta, state = self._load(segment)
        states = []
        for k, rows in enumerate(batches):
            states.append((theta, state))
            theta, state = self._step(theta, state, self.w[rows], rows, segment * self.every + k)
        return states

    def _save(self, segment: int, theta: Tensor, state: tuple) -> None:
        if self.checkpoint_dir is None:
            self._checkpoints.append((theta.detach(), tuple(s.detach() for s in state)))
            return
        folder = Path(self.checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "theta": theta.detach().contiguous(),
            **{f"state{k}": s.detach().contiguous() for k, s in enumerate(state)},
        }
        path = folder / f"step-{segment * self.every:08d}.safetensors"
        atomic_write(path, lambda f: f.write(safetensors.torch.save(tensors)))
        self._checkpoints.append(path)

    def _load(self, segment: int) -> Checkpoint:
        stored = self._checkpoints[segment]
        if not isinstance(stored, Path):
            return stored
        tensors = safetensors.torch.load_file(stored, device=str(self.fm.device))
        return tensors["theta"], tuple(tensors[f"state{k}"] for k in range(len(tensors) - 1))
