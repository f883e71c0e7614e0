"""Deterministic full-batch training for the demos and benchmarks (the library never trains)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from influence.replay import TrainingRecipe
from influence.task import Task


def adam_recipe(epochs: int = 500, lr: float = 1e-2, seed: int = 0) -> TrainingRecipe:
    """The recipe `train_adam` runs: full-batch Adam, cosine decay to zero, `epochs` steps."""
    return TrainingRecipe(optimizer="adam", lr=lr, epochs=epochs, schedule="cosine", seed=seed)


def train_adam(model: nn.Module, inputs: Tensor, targets: Tensor, task: Task, epochs: int = 500,
               lr: float = 1e-2, seed: int = 0) -> nn.Module:
    """Full-batch Adam with cosine decay to zero on `objective` (all trainable parameters).

    Deterministic for a given seed and data: no shuffling, no dropout noise beyond the model's.
    Replayable: `influence.replay.Replay(initial_model, (inputs, targets), adam_recipe(epochs,
    lr, seed), task)` re-runs exactly this. Returns the model (trained in place, eval mode).
    """
    torch.manual_seed(seed)
    return adam_recipe(epochs, lr, seed).train(model, inputs, targets, task)
