"""Test matrices for the solvers."""

import torch


def spd(p, seed, negative=False):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=gen, dtype=torch.float64))
    eig = torch.linspace(0.1, 10.0, p, dtype=torch.float64)
    if negative:
        eig[0] = -5.0
    return Q @ torch.diag(eig) @ Q.T
