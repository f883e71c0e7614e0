"""Per-example gradients of the training loss and of the test measurement.

Both are flat vectors over the attributed parameters: `Tensor[b, p]` for a batch of b
examples. They are computed with `torch.func.vmap(torch.func.grad(...))`, one backward
pass per batch.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from influence.batching import describe, num_rows, take, to_model, unsqueeze
from influence.errors import InfluenceWarning, InvalidArgumentError
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
    return map_examples(fm, torch.func.grad(single), theta, inputs, targets)


def map_examples(fm: FunctionalModel, fn: Callable, shared: Any, *batched: Any) -> Tensor:
    """`fn(shared, *one_example)` for every example of `batched` (tensors or input pytrees with a
    leading example dimension), stacked: `torch.func.vmap` over the examples, or one example
    at a time when vmap cannot batch the model — decided on the first batch, remembered for
    `fm`. A model that branches on the values of its inputs (Hugging Face's attention-mask
    checks) is expected to; any other reason (an op with no batching rule, such as an LSTM's
    in-place state update) is said once in an `InfluenceWarning`. An error that the
    one-example path raises too is the model's own, and is raised."""
    one_at_a_time = lambda: torch.stack([fn(shared, *(take(b, i) for b in batched))  # noqa: E731
                                         for i in range(num_rows(batched[0]))])
    if getattr(fm, "per_example_loop", False):
        return one_at_a_time()
    try:
        return torch.func.vmap(fn, in_dims=(None,) + (0,) * len(batched))(shared, *batched)
    except RuntimeError as error:
        result = one_at_a_time()
        fm.per_example_loop = True
        if "data-dependent control flow" not in str(error):
            warnings.warn(f"per-example gradients are computed one example at a time (correct, slower): "
                          f"torch.func.vmap cannot batch this model ({' '.join(str(error).split())[:160]})",
                          InfluenceWarning, stacklevel=3)
        return result


class CheckpointGradients:
    """Per-example gradients of one model architecture at several parameter values.

    Args:
        checkpoints: `None` (only the attributor's model) or a non-empty sequence of
            `state_dict()`s of the attributor's model (same architecture). Each checkpoint
            supplies every parameter and buffer, attributed or not.
    """

    def __init__(self, checkpoints: Sequence[Mapping[str, Tensor]] | None):
        if checkpoints is not None:
            if isinstance(checkpoints, Mapping) or not isinstance(checkpoints, Sequence) or not checkpoints:
                raise InvalidArgumentError("`checkpoints` must be a non-empty list of state_dicts of the model "
                                           f"(or None for the model as given); got {type(checkpoints).__name__}")
            if not all(isinstance(c, Mapping) for c in checkpoints):
                raise InvalidArgumentError("every entry of `checkpoints` must be a state_dict (a mapping of "
                                           "parameter names to tensors)")
        self.checkpoints = checkpoints
        self._models: list[FunctionalModel] | None = None
        self._source: FunctionalModel | None = None

    def __len__(self) -> int:
        return 1 if self.checkpoints is None else len(self.checkpoints)

    def models(self, fm: FunctionalModel) -> list[FunctionalModel]:
        """One `FunctionalModel` per checkpoint, built once from copies of `fm.model`."""
        if self.checkpoints is None:
            return [fm]
        if self._source is not fm:
            self._models = []
            for c, state in enumerate(self.checkpoints):
                model = copy.deepcopy(fm.model)
                try:
                    model.load_state_dict(state)
                except RuntimeError as err:
                    raise InvalidArgumentError(f"`checkpoints[{c}]` does not fit the model: {err}") from None
                self._models.append(FunctionalModel(model.to(fm.device, fm.dtype), fm.names, forward=fm.forward))
            self._source = fm
        return self._models

    def grads(self, fm: FunctionalModel, fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
              targets: Tensor) -> list[Tensor]:
        """Per-example gradients at every checkpoint: a list of C tensors [b, p]."""
        return [per_example_grads(m, fn, inputs, targets) for m in self.models(fm)]
