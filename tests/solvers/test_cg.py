"""`influence.solvers.conjugate_gradient` against direct solves."""

import torch

from influence.solvers import conjugate_gradient
from tests.solvers.spd import spd


def test_cg_solves_spd_blocks():
    A = spd(40, 0)
    B = torch.randn(5, 40, dtype=torch.float64)
    X, info = conjugate_gradient(lambda V: V @ A, B, damping=0.5, tol=1e-10)
    expected = torch.linalg.solve(A + 0.5 * torch.eye(40, dtype=torch.float64), B.T).T
    assert torch.allclose(X, expected, atol=1e-8)
    assert info.converged and not info.negative_curvature and info.residual < 1e-9


def test_preconditioned_cg_gives_the_same_solution_in_fewer_iterations():
    A = spd(60, 4)
    B = torch.randn(6, 60, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = torch.linalg.solve(A + 0.01 * torch.eye(60, dtype=torch.float64), B.T).T
    values, vectors = torch.linalg.eigh(A)
    U, e = vectors[:, -20:].T, values[-20:]  # the top 20 eigenpairs, rows of U
    floor = float(e.min()) + 0.01

    def deflate(R):
        return ((R @ U.T) * (1 / (e + 0.01) - 1 / floor)) @ U + R / floor
    plain, plain_info = conjugate_gradient(lambda V: V @ A, B, damping=0.01, tol=1e-10)
    X, info = conjugate_gradient(lambda V: V @ A, B, damping=0.01, tol=1e-10, preconditioner=deflate)
    assert torch.allclose(X, expected, atol=1e-7) and torch.allclose(plain, expected, atol=1e-7)
    assert info.converged and info.residual < 1e-9
    assert info.iterations < plain_info.iterations


def test_cg_flags_negative_curvature():
    A = spd(30, 1, negative=True)
    B = torch.randn(3, 30, dtype=torch.float64)
    _, info = conjugate_gradient(lambda V: V @ A, B, damping=0.0, tol=1e-10, max_iter=200)
    assert info.negative_curvature


def test_cg_reports_non_convergence():
    A = spd(50, 2)
    B = torch.randn(2, 50, dtype=torch.float64)
    _, info = conjugate_gradient(lambda V: V @ A, B, damping=0.0, tol=1e-12, max_iter=3)
    assert not info.converged and info.iterations == 3 and info.residual > 1e-6
