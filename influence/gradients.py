"""Per-example gradients of the training loss and of the test measurement.

Both are flat vectors over the attributed parameters: `Tensor[b, p]` for a batch of b
examples. They are computed with `torch.func.vmap(torch.func.grad(...))`, one backward
pass per batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from influence.batching import describe, take, to_model, unsqueeze
from influence.errors import InvalidArgumentError
from influence.model import FunctionalModel
from influence.task import Task


def check_targets(fm: FunctionalModel, task: Task, inputs, targets: Tensor, argument: str) -> None:
    """Raise a clear error if the model cannot run on `inputs` or the task cannot use
    `targets` with its outputs."""
    try:
        with torch.no_grad():
            outputs = fm(fm.theta, inputs)
    except (RuntimeError, TypeError, ValueError, IndexError) as error:  # wrong width, dtype, rank...
        detail = " ".join(str(error).split())
        raise InvalidArgumentError(
            f"the model cannot run on the inputs of `{argument}` ({describe(inputs)}): "
            f"{type(error).__name__}: {detail}"
        ) from error
    task.check_batch(outputs, targets, argument)


def per_example_grads(fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs,
                      targets: Tensor, theta: Tensor | None = None) -> Tensor:
    """∇_θ fn(f(x_i; θ), y_i) for every example i of the batch.

    Args:
        fm: the model as a function of the flat attributed parameters.
        fn: per-example scalar function of (outputs [b, ...], targets [b, ...]) -> [b],
            e.g. `task.loss` or `task.measurement`.
        inputs: Tensor[b, ...] or a dict / tuple of them (see `influence.batching`);
            targets: Tensor[b, ...].
        theta: parameters to differentiate at (default: the model's current values).
    Returns:
        Tensor[b, p].
    """
    theta = fm.theta if theta is None else theta

    def single(th: Tensor, x, y: Tensor) -> Tensor:
        return fn(fm(th, unsqueeze(x)), y.unsqueeze(0)).sum()

    inputs, targets = to_model(inputs, fm.device, fm.dtype), targets.to(fm.device)
    if not getattr(fm, "per_example_loop", False):
        try:
            return torch.func.vmap(torch.func.grad(single), in_dims=(None, 0, 0))(theta, inputs, targets)
        except RuntimeError as error:
            if "vmap" not in str(error):
                raise
            # The model branches on the values of its inputs (e.g. Hugging Face's attention-mask checks),
            # which vmap cannot batch: one example at a time from now on, for this model.
            fm.per_example_loop = True
    grad = torch.func.grad(single)
    return torch.stack([grad(theta, take(inputs, i), targets[i]) for i in range(len(targets))])
