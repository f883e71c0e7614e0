"""Independent float64 references for the method tests: autograd per-example gradients
and dense curvature matrices, one example at a time (no code from `influence` beyond the
model and task objects)."""

import torch
from torch.autograd.functional import jacobian


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def as_function(model):
    """θ (flat, all parameters in `named_parameters` order) -> (x -> outputs)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def at(theta):
        parts, offset = {}, 0
        for name, shape in zip(names, shapes):
            parts[name] = theta[offset:offset + shape.numel()].view(shape)
            offset += shape.numel()
        return lambda x: torch.func.functional_call(model, parts, (x,))

    return at


def per_example_grads(model, fn, X, y):
    """Tensor[n, p]: ∇_θ fn(f(x_i; θ), y_i), one autograd call per example."""
    at, theta = as_function(model), flat(model)
    return torch.stack([jacobian(lambda th: fn(at(th)(X[i:i + 1]), y[i:i + 1]).sum(), theta)
                        for i in range(len(y))])


def ggn(model, X):
    """Dense GGN of the mean softmax cross-entropy, (1/n) Σ Jᵀ (diag p − p pᵀ) J (no weight decay)."""
    at, theta = as_function(model), flat(model)
    J = jacobian(lambda th: at(th)(X), theta)  # [n, C, p]
    P = torch.softmax(model(X), dim=1).detach()
    H_out = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]
    return torch.einsum("ncp,ncd,ndq->pq", J, H_out, J) / len(X)


def hessian(model, task, X, y):
    """Dense Hessian of the mean training loss (no weight decay)."""
    at, theta = as_function(model), flat(model)
    return torch.autograd.functional.hessian(lambda th: task.loss(at(th)(X), y).mean(), theta)
