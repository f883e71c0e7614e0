"""Retraining for ground truth: the training objective of a `Task` and its exact minimiser.

`minimize` solves the objective over the attributed parameters to a tight gradient
tolerance with full-batch L-BFGS — what leave-one-out validation needs. Demo training
(`train_adam`) lives in `influence.demos.training`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from influence.model import FunctionalModel
from influence.task import Task


def objective(fm: FunctionalModel, task: Task, theta: Tensor, inputs: Tensor, targets: Tensor,
              weights: Tensor | None = None) -> Tensor:
    """(1/n) Σ_i w_i · loss_i(θ) + (weight_decay / 2)·‖θ‖², with n = len(targets), w_i = 1 by default."""
    losses = task.loss(fm(theta, inputs), targets)
    if weights is not None:
        losses = losses * weights
    return losses.sum() / targets.shape[0] + 0.5 * task.weight_decay * (theta * theta).sum()


def minimize(fm: FunctionalModel, task: Task, inputs: Tensor, targets: Tensor, theta0: Tensor,
             weights: Tensor | None = None, tol: float = 1e-10, max_iter: int = 2000) -> Tensor:
    """Minimise `objective` over θ from `theta0` with L-BFGS (strong Wolfe line search).

    Returns the flat parameters, Tensor[p]. Stops when ‖∇‖∞ ≤ tol or after `max_iter`.
    """
    theta = theta0.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=max_iter, history_size=50, tolerance_grad=tol,
                            tolerance_change=0.0, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        value = objective(fm, task, theta, inputs, targets, weights)
        value.backward()
        return value

    opt.step(closure)
    return theta.detach()


def load_flat(model: nn.Module, fm: FunctionalModel, theta: Tensor) -> None:
    """Copy the flat attributed parameters θ back into `model`."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in fm.unflatten(theta).items():
            params[name].copy_(value)
