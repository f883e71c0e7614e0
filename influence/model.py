"""A model viewed as a function of one flat vector of attributed parameters.

Influence methods work with θ as a flat vector of the attributed parameters (length p);
the other parameters and buffers are held fixed. `FunctionalModel(model, task)(θ, x)`
returns the model outputs for inputs `x` with those parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from influence.errors import InvalidArgumentError


def select_parameters(model: nn.Module, wanted: list[str] | None) -> list[str]:
    """Names of the attributed parameters: all trainable ones, or those matching `wanted`.

    An entry of `wanted` matches a parameter name exactly or as a dotted prefix
    (`"fc2"` matches `"fc2.weight"` and `"fc2.bias"`).
    """
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise InvalidArgumentError(
            "`model` has no trainable parameters (all have requires_grad=False); "
            "there is nothing to attribute"
        )
    if wanted is None:
        return trainable
    chosen = [n for n in trainable if any(n == w or n.startswith(w + ".") for w in wanted)]
    unmatched = [w for w in wanted if not any(n == w or n.startswith(w + ".") for n in trainable)]
    if unmatched:
        raise InvalidArgumentError(
            f"task.parameters names {unmatched}, which match no trainable parameter of the model; "
            f"trainable parameters are {trainable}"
        )
    return chosen


class FunctionalModel:
    """`model` as `f(θ, inputs)` with θ a flat vector of the attributed parameters.

    Attributes:
        names: attributed parameter names, in flattening order.
        theta: Tensor[p], the current values (detached copy).
        p: number of attributed scalars.
    """

    def __init__(self, model: nn.Module, parameter_names: list[str] | None = None):
        self.model = model
        self.names = select_parameters(model, parameter_names)
        params = dict(model.named_parameters())
        self.shapes = [params[n].shape for n in self.names]
        self.numels = [params[n].numel() for n in self.names]
        self.theta = torch.cat([params[n].detach().reshape(-1) for n in self.names]).clone()
        self.fixed = {n: t.detach() for n, t in params.items() if n not in self.names}
        self.p = self.theta.numel()
        self.dtype = self.theta.dtype
        self.device = self.theta.device

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.numels), self.shapes)}

    def __call__(self, theta: Tensor, inputs: Tensor) -> Tensor:
        return torch.func.functional_call(self.model, {**self.fixed, **self.unflatten(theta)}, (inputs,))

    def fingerprint(self) -> str:
        """SHA-256 of the architecture description and all parameter and buffer values."""
        h = hashlib.sha256(repr(self.model).encode())
        for name, t in list(self.model.named_parameters()) + list(self.model.named_buffers()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Run the model in eval mode (dropout off, batch-norm statistics fixed), then restore."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)


def is_affine_in_parameters(fm: FunctionalModel, inputs: Tensor, seed: int = 0) -> bool:
    """True when the outputs are affine in θ (e.g. a linear model or a linear head).

    Checks the second directional derivative d²f(θ + t·v)/dt² along a random v, which is
    zero for every v exactly when f is affine in θ (and nonzero for almost every v otherwise).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(fm.p, generator=gen, dtype=fm.dtype).to(fm.device)
    first = lambda th: torch.func.jvp(lambda t: fm(t, inputs), (th,), (v,))[1]
    _, second = torch.func.jvp(first, (fm.theta,), (v,))
    scale = first(fm.theta).abs().max().clamp_min(1e-30)
    return bool(second.abs().max() <= 1e-6 * scale)
