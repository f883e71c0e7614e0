"""Deterministic full-batch training for the demos and benchmarks (the library never trains)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from influence.model import FunctionalModel
from influence.task import Task
from influence.training import load_flat, objective


def train_adam(model: nn.Module, inputs: Tensor, targets: Tensor, task: Task, epochs: int = 500,
               lr: float = 1e-2, seed: int = 0) -> nn.Module:
    """Full-batch Adam with cosine decay to zero on `objective` (all trainable parameters).

    Deterministic for a given seed and data: no shuffling, no dropout noise beyond the model's.
    Returns the model (trained in place).
    """
    torch.manual_seed(seed)
    fm = FunctionalModel(model, None, in_eval_mode=False)
    theta = fm.theta.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0.0)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        objective(fm, task, theta, inputs, targets).backward()
        opt.step()
        schedule.step()
    load_flat(model, fm, theta.detach())
    model.eval()
    return model
