"""`influence.solvers.lissa` against direct solves, and its divergence detection."""

import torch

from influence.solvers import lissa
from tests.solvers.spd import spd


def test_lissa_solves_and_detects_divergence():
    A = spd(20, 3)
    B = torch.randn(4, 20, dtype=torch.float64)
    X, info = lissa(lambda V: V @ A, B, damping=1.0, scale=12.0, tol=1e-10)
    expected = torch.linalg.solve(A + torch.eye(20, dtype=torch.float64), B.T).T
    assert info.converged and torch.allclose(X, expected, atol=1e-8)
    _, bad = lissa(lambda V: V @ A, B, damping=1.0, scale=2.0, tol=1e-10, max_iter=5000)
    assert bad.diverged and not bad.converged
