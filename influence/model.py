"""A model viewed as a function of one flat vector of attributed parameters.

Influence methods work with θ as a flat vector of the attributed parameters (length p);
the other parameters and buffers are held fixed. `FunctionalModel(model, names)(θ, inputs)`
returns the model outputs for `inputs` (a tensor, or a dict / tuple of tensors: see
`influence.batching`) with those parameters, always in eval mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from influence.errors import InvalidArgumentError
from influence.parameters import select_parameters

LOW_PRECISION = (torch.float16, torch.bfloat16)


class FunctionalModel:
    """`model` as `f(θ, inputs)` with θ a flat vector of the attributed parameters.

    Args:
        model: the module; never modified.
        parameter_names: attributed parameters (see `select_parameters`); None = all trainable.
        forward: `forward(model, inputs) -> outputs`, how the model is called (default
            `default_forward`; a task passes its `Task.forward`).
        in_eval_mode: run every call in eval mode (dropout off, batch-norm statistics
            fixed), restoring each submodule's mode afterwards. Attribution always does;
            training code passes False.
    Attributes:
        names: attributed parameter names, in flattening order.
        theta: Tensor[p], the current values (detached copy); float32 for a float16 /
            bfloat16 model, whose other parameters and buffers are then float32 copies too
            (`upcast_from` names the model's dtype).
        p: number of attributed scalars.
    """

    def __init__(self, model: nn.Module, parameter_names: list[str] | None = None,
                 forward: Callable | None = None, in_eval_mode: bool = True):
        self.model = model
        self.forward = forward or default_forward
        self.in_eval_mode = in_eval_mode
        self.names = select_parameters(model, parameter_names)
        self.plain_kernels = plain_kernels_for(model)
        params = dict(model.named_parameters())
        self.shapes = [params[n].shape for n in self.names]
        self.numels = [params[n].numel() for n in self.names]
        self.theta = torch.cat([params[n].detach().reshape(-1) for n in self.names]).clone()
        self.fixed = {n: t.detach() for n, t in params.items() if n not in self.names}
        self.upcast_from = None  # a half-precision model is attributed in float32 (copies; the model is untouched)
        if self.theta.dtype in LOW_PRECISION:
            self.upcast_from = str(self.theta.dtype).removeprefix("torch.")
            self.theta = self.theta.float()
            low = {n: t.detach() for n, t in model.named_buffers() if t.dtype in LOW_PRECISION}
            self.fixed = {n: t.float() if t.dtype in LOW_PRECISION else t for n, t in {**self.fixed, **low}.items()}
        self.p = self.theta.numel()
        self.dtype = self.theta.dtype
        self.device = self.theta.device

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.numels), self.shapes)}

    def __call__(self, theta: Tensor, inputs) -> Tensor:
        params = {**self.fixed, **self.unflatten(theta)}
        call = lambda: torch.func.functional_call(_Forward(self.model, self.forward),
                                                  {f"model.{n}": t for n, t in params.items()}, (inputs,))
        # The fused attention and RNN kernels have no forward-mode derivative (curvature
        # products and the convexity probe use jvp): run their plain forms, which have every one.
        with sdpa_kernel(SDPBackend.MATH), self.plain_kernels(), \
                (eval_mode(self.model) if self.in_eval_mode else contextlib.nullcontext()):
            return call()

    def fingerprint(self) -> str:
        """SHA-256 of the architecture description and all parameter and buffer values."""
        h = hashlib.sha256(repr(self.model).encode())
        for name, t in list(self.model.named_parameters()) + list(self.model.named_buffers()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


class _Forward(nn.Module):
    """`forward(model, inputs)` as a module, so `functional_call` can swap the parameters."""

    def __init__(self, model: nn.Module, forward: Callable):
        super().__init__()
        self.model, self._forward = model, forward

    def forward(self, inputs):
        return self._forward(self.model, inputs)


def default_forward(model: nn.Module, inputs):
    """`model(**inputs)` for a dict, `model(*inputs)` for a tuple/list, else `model(inputs)`;
    an output with `.logits` (a Hugging Face model output) gives its logits, and a tuple or
    list (`return_dict=False`, or a model returning `(logits, extras...)`) its first element,
    which must be a tensor (Hugging Face puts the logits first when no labels are passed)."""
    if isinstance(inputs, dict):
        out = model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        out = model(*inputs)
    else:
        out = model(inputs)
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        if not out or not isinstance(out[0], Tensor):
            first = type(out[0]).__name__ if out else "missing"
            raise InvalidArgumentError(
                f"the model returned a {type(out).__name__} whose first element is {first}; the "
                "default forward takes the outputs from the first element of a tuple: return "
                "the logits first, or pass a Task whose `forward` picks them")
        return out[0]
    return out


class _SwitchedOff:
    """A context that turns one of torch's global kernel switches off while any thread is
    inside it, and restores the user's setting when the last one leaves."""

    def __init__(self, get: Callable[[], bool], set_: Callable[[bool], None]):
        self.get, self.set, self.lock, self.inside, self.saved = get, set_, threading.Lock(), 0, True

    def __enter__(self) -> None:
        with self.lock:
            if self.inside == 0:
                self.saved = self.get()
                self.set(False)
            self.inside += 1

    def __exit__(self, *exc) -> None:
        with self.lock:
            self.inside -= 1
            if self.inside == 0:
                self.set(self.saved)


def _set_mkldnn(value: bool) -> None:
    torch.backends.mkldnn.enabled = value


# nn.MultiheadAttention / nn.TransformerEncoderLayer's fused inference path, and oneDNN's LSTM/GRU.
FUSED_ATTENTION_OFF = _SwitchedOff(torch.backends.mha.get_fastpath_enabled, torch.backends.mha.set_fastpath_enabled)
ONEDNN_OFF = _SwitchedOff(lambda: torch.backends.mkldnn.enabled, _set_mkldnn)


def plain_kernels_for(model: nn.Module) -> Callable[[], contextlib.AbstractContextManager]:
    """What a model's calls run under so that every op has forward- and reverse-mode
    derivatives: the fused attention path off when it has attention layers, oneDNN off when it
    has RNNs (oneDNN stays on otherwise: convolutions need it to be fast)."""
    kinds = {type(m) for m in model.modules()}
    attention = any(issubclass(k, (nn.MultiheadAttention, nn.TransformerEncoderLayer,
                                   nn.TransformerDecoderLayer)) for k in kinds)
    rnn = any(issubclass(k, nn.RNNBase) for k in kinds)

    @contextlib.contextmanager
    def plain() -> Iterator[None]:
        with FUSED_ATTENTION_OFF if attention else contextlib.nullcontext(), \
                ONEDNN_OFF if rnn else contextlib.nullcontext():
            yield

    return plain


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run `model` in eval mode (dropout off, batch-norm statistics fixed), then restore the
    mode of every submodule as it was (a partly frozen model stays partly frozen)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


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
