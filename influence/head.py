"""Fast curvature products when only a linear softmax head is attributed.

A very common debugging setup is a frozen backbone with a trained `nn.Linear` head on top
(e.g. a sentence encoder + classifier). If the attributed parameters are exactly that
layer's weight (and bias), its output is the model output and the task is plain
cross-entropy, then the GGN (= Hessian) product is the fused `kernels.ce_head_hvp` over the
head's input features Φ and the probabilities P, both computed once.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from influence.batching import num_rows, take
from influence.model import FunctionalModel
from influence.task import ClassificationTask, Task
from influence_kernels.ce_head import ce_head_hvp


def _is_plain_cross_entropy(task: Task) -> bool:
    cls = type(task)
    return (isinstance(task, ClassificationTask) and cls.loss is ClassificationTask.loss
            and cls.output_hessian_vp is ClassificationTask.output_hessian_vp)


def find_linear_head(fm: FunctionalModel, task: Task) -> str | None:
    """Name of the `nn.Linear` whose weight (and bias) are exactly the attributed
    parameters, for a plain cross-entropy task; None otherwise."""
    if not _is_plain_cross_entropy(task):
        return None
    for name, module in fm.model.named_modules():
        if isinstance(module, nn.Linear):
            prefix = f"{name}." if name else ""
            own = [prefix + "weight"] + ([prefix + "bias"] if module.bias is not None else [])
            if fm.names == own:
                return name
    return None


class LinearHeadProducts:
    """`(C + weight_decay·I) V` for a linear softmax head, via the fused kernel.

    Args:
        fm: the model with exactly one `nn.Linear` attributed (see `find_linear_head`).
        head: that module's name.
        inputs: the curvature data's inputs, Tensor[n, ...].
        weight_decay: the task's L2 coefficient.
    Raises:
        LookupError: when the head's output is not the model output (then the generic
            path must be used).
    """

    def __init__(self, fm: FunctionalModel, head: str, inputs: Tensor, weight_decay: float, batch_size: int = 4096):
        module = fm.model.get_submodule(head)
        self.C, self.d = module.out_features, module.in_features
        self.has_bias = module.bias is not None
        self.weight_decay = weight_decay
        captured: list[Tensor] = []
        hook = module.register_forward_hook(lambda m, args, out: captured.append(args[0].detach()))
        try:
            with torch.no_grad():
                outputs = torch.cat([fm(fm.theta, take(inputs, slice(lo, lo + batch_size)))
                                     for lo in range(0, num_rows(inputs), batch_size)])
        finally:
            hook.remove()
        phi = torch.cat(captured)
        if phi.ndim != 2 or outputs.shape != (num_rows(inputs), self.C):
            raise LookupError("the head is applied to non-flat features or is not the model output")
        W = fm.unflatten(fm.theta)
        logits = phi @ W[f"{head}.weight" if head else "weight"].T
        if self.has_bias:
            logits = logits + W[f"{head}.bias" if head else "bias"]
        if not torch.allclose(logits, outputs, rtol=1e-5, atol=1e-6):
            raise LookupError("the head's output is transformed before the model returns it")
        self.phi, self.probs = phi, torch.softmax(outputs, dim=-1)

    def mean_eigenvalue(self) -> float:
        """trace(C + weight_decay·I) / p, exactly: `(1/n) Σ_i tr(diag(p_i) − p_i p_iᵀ)·‖φ̃_i‖²`
        with φ̃_i the head input (and a 1 for the bias)."""
        width = (self.phi**2).sum(dim=1) + float(self.has_bias)
        trace = float(((1 - (self.probs**2).sum(dim=1)) * width).mean())
        return trace / (self.C * (self.d + self.has_bias)) + self.weight_decay

    def matvec(self, V: Tensor) -> Tensor:
        """V: Tensor[k, p] in the flattening order (weight C×d, then bias C) -> Tensor[k, p]."""
        k, Cd = V.shape[0], self.C * self.d
        directions = V[:, :Cd].reshape(k, self.C, self.d)
        if self.has_bias:
            directions = torch.cat([directions, V[:, Cd:].reshape(k, self.C, 1)], dim=2)
        out = ce_head_hvp(self.phi, self.probs, directions, bias=self.has_bias)
        flat = torch.cat([out[..., : self.d].reshape(k, Cd), out[..., self.d:].reshape(k, -1)], dim=1)
        return flat.to(V.dtype) + self.weight_decay * V
