"""A training run the library can replay: initialisation, data order, optimiser, schedule, seed.

`TrainingRecipe` is plain values. `recipe.train(model, inputs, targets, task)` runs it with
`torch.optim` (an ordinary training run, e.g. the demos' `train_adam`); `influence.replay`
re-runs the same steps as pure functions to differentiate them. Everything the run depends
on is in the recipe, the initial model and the data, so the two agree to rounding.

The objective at step t on batch B_t is `influence.training.objective` on that batch (every
example's weight w_i = 1 in training):

    (1/|B_t|) Σ_{i ∈ B_t} w_i · loss_i(θ) + (task.weight_decay / 2)·‖θ‖²
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from influence.batching import take
from influence.errors import InvalidArgumentError
from influence.model import FunctionalModel
from influence.replay import optim
from influence.task import Task
from influence.training import objective

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainingRecipe:
    """How a model is trained, in full.

    Attributes:
        optimizer: "adam" (torch.optim.Adam) or "sgd" (torch.optim.SGD, optional momentum).
        lr: peak learning rate.
        epochs: passes over the training set.
        batch_size: examples per step; None = full batch (one step per epoch).
        schedule: "cosine" (lr·½(1 + cos(π·t/T)) at step t of T, decaying to 0) or "constant".
        seed: seeds the data order (a `torch.Generator` permutation per epoch when
            batch_size is set; full-batch runs have no order to seed).
        betas, eps: Adam's; momentum: SGD's.
    """

    optimizer: str = "adam"
    lr: float = 1e-2
    epochs: int = 500
    batch_size: int | None = None
    schedule: str = "cosine"
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise InvalidArgumentError(
                f"`optimizer` must be one of {OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise InvalidArgumentError(
                f"`schedule` must be one of {SCHEDULES}, got {self.schedule!r}"
            )
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise InvalidArgumentError(f"`epochs` must be a positive integer, got {self.epochs!r}")
        if self.batch_size is not None and (
            not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise InvalidArgumentError(
                f"`batch_size` must be None (full batch) or a positive integer, "
                f"got {self.batch_size!r}"
            )
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise InvalidArgumentError(f"`lr` must be a positive number, got {self.lr!r}")

    def steps(self, n: int) -> int:
        """Optimiser steps for n training examples."""
        return self.epochs * (1 if self.batch_size is None else math.ceil(n / self.batch_size))

    def lr_at(self, t: int, total: int) -> float:
        """Learning rate of step t (0-based) of `total`."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1 + math.cos(math.pi * t / total))

    def batches(self, n: int) -> Iterator[Tensor]:
        """The index batches of the run in order, LongTensor[b] each (steps(n) of them)."""
        if self.batch_size is None:
            everything = torch.arange(n)
            for _ in range(self.epochs):
                yield everything
            return
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            yield from torch.randperm(n, generator=gen).split(self.batch_size)

    def init_state(self, theta: Tensor) -> optim.State:
        return optim.adam_init(theta) if self.optimizer == "adam" else optim.sgd_init(theta)

    def step(
        self, theta: Tensor, state: optim.State, grad: Tensor, lr: float, t: int
    ) -> tuple[Tensor, optim.State]:
        """The optimiser update as a pure function (t counts from 1)."""
        if self.optimizer == "adam":
            return optim.adam_step(theta, state, grad, lr, t, self.betas, self.eps)
        return optim.sgd_step(theta, state, grad, lr, t, self.momentum)

    def torch_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)

    def train(
        self, model: nn.Module, inputs, targets: Tensor, task: Task, weights: Tensor | None = None
    ) -> nn.Module:
        """Train every trainable parameter of `model` in place by this recipe with `torch.optim`
        (train mode); returns the model in eval mode.

        `inputs`: Tensor[n, ...] (or a dict / tuple of them), `targets`: Tensor[n, ...];
        `weights`: Tensor[n], each example's loss weight w_i (default all 1; 0 leaves an
        example out while keeping the 1/|B| normalisation, as the replay's derivative does).
        """
        fm = FunctionalModel(
            model, None, forward=task.forward, in_eval_mode=False
        )  # every trainable parameter
        theta = fm.theta.clone().requires_grad_(True)
        opt = self.torch_optimizer([theta])
        n = targets.shape[0]
        total = self.steps(n)
        model.train()
        for t, rows in enumerate(self.batches(n)):
            for group in opt.param_groups:
                group["lr"] = self.lr_at(t, total)
            opt.zero_grad()
            w = None if weights is None else weights[rows]
            objective(fm, task, theta, take(inputs, rows), targets[rows], w).backward()
            opt.step()
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in fm.unflatten(theta.detach()).items():
                params[name].copy_(value)
        return model.eval()
