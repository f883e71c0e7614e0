"""Optimiser steps as pure functions of (θ, state, gradient), so a run can be differentiated.

Each step reproduces the arithmetic of its `torch.optim` counterpart (same formula, same
order of bias corrections), so replaying a run trained with `torch.optim.Adam` or
`torch.optim.SGD` reproduces its parameters to rounding. The state is a tuple of tensors
shaped like θ (Tensor[p]); `t` counts steps from 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

State = tuple[Tensor, ...]


def adam_init(theta: Tensor) -> State:
    """Adam's (first moment, second moment), both zero: a tuple of two Tensor[p]."""
    return torch.zeros_like(theta), torch.zeros_like(theta)


def adam_step(
    theta: Tensor,
    state: State,
    grad: Tensor,
    lr: float,
    t: int,
    betas: tuple[float, float],
    eps: float,
) -> tuple[Tensor, State]:
    """One `torch.optim.Adam` step (no weight decay inside the optimiser): returns (θ', state')."""
    beta1, beta2 = betas
    m = state[0] * beta1 + grad * (1 - beta1)
    v = state[1] * beta2 + grad * grad * (1 - beta2)
    step_size = lr / (1 - beta1**t)
    denom = safe_sqrt(v) / (1 - beta2**t) ** 0.5 + eps
    return theta - step_size * m / denom, (m, v)


def sgd_init(theta: Tensor) -> State:
    """SGD's momentum buffer, zero: a tuple of one Tensor[p]."""
    return (torch.zeros_like(theta),)


def sgd_step(
    theta: Tensor, state: State, grad: Tensor, lr: float, t: int, momentum: float
) -> tuple[Tensor, State]:
    """One `torch.optim.SGD` step (dampening 0, no Nesterov): returns (θ', state')."""
    buf = grad if t == 1 or momentum == 0 else state[0] * momentum + grad
    return theta - lr * buf, (buf,)


def safe_sqrt(v: Tensor) -> Tensor:
    """√v whose derivative stays finite where v = 0 (an entry whose gradient was exactly zero).

    Differs from `torch.sqrt` only below the smallest normal number of the dtype.
    """
    return v.clamp_min(torch.finfo(v.dtype).tiny).sqrt()
