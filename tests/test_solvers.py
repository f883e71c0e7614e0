"""Iterative methods against `exact`, and their failure diagnostics."""

import warnings

import pytest
import torch
from scipy.stats import spearmanr

import influence as inf
from influence.solvers import conjugate_gradient, lissa


@pytest.mark.parametrize("method", ["cg", "lissa"])
def test_iterative_methods_agree_with_exact_on_damped_mlp(mlp, method):
    model, task, train, test = mlp
    exact = inf.Attributor(model, train, task=task, method="exact", progress=False).fit().scores(test)
    attr = inf.Attributor(model, train, task=task, method=method, progress=False).fit()
    got = attr.scores(test)
    assert spearmanr(exact.flatten(), got.flatten())[0] >= 0.99
    assert (got - exact).norm() / exact.norm() < 1e-3
    assert attr.diagnostics["converged"] is True


def test_stochastic_lissa_is_close(mlp):
    model, task, train, test = mlp
    exact = inf.Attributor(model, train, task=task, method="exact", progress=False).fit().scores(test)
    attr = inf.Attributor(model, train, task=task, method="lissa", hvp_batch_size=45, repeats=4, max_iter=1500,
                          progress=False).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", inf.InfluenceWarning)
        got = attr.scores(test)
    assert spearmanr(exact.flatten(), got.flatten())[0] >= 0.95


def spd(p, seed, negative=False):
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(p, p, generator=gen, dtype=torch.float64))
    eig = torch.linspace(0.1, 10.0, p, dtype=torch.float64)
    if negative:
        eig[0] = -5.0
    return Q @ torch.diag(eig) @ Q.T


def test_cg_solves_spd_blocks():
    A = spd(40, 0)
    B = torch.randn(5, 40, dtype=torch.float64)
    X, info = conjugate_gradient(lambda V: V @ A, B, damping=0.5, tol=1e-10)
    expected = torch.linalg.solve(A + 0.5 * torch.eye(40, dtype=torch.float64), B.T).T
    assert torch.allclose(X, expected, atol=1e-8)
    assert info.converged and not info.negative_curvature and info.residual < 1e-9


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


def test_lissa_solves_and_detects_divergence():
    A = spd(20, 3)
    B = torch.randn(4, 20, dtype=torch.float64)
    X, info = lissa(lambda V: V @ A, B, damping=1.0, scale=12.0, tol=1e-10)
    expected = torch.linalg.solve(A + torch.eye(20, dtype=torch.float64), B.T).T
    assert info.converged and torch.allclose(X, expected, atol=1e-8)
    _, bad = lissa(lambda V: V @ A, B, damping=1.0, scale=2.0, tol=1e-10, max_iter=5000)
    assert bad.diverged and not bad.converged


def test_attributor_warns_when_solver_does_not_converge(mlp):
    model, task, train, test = mlp
    attr = inf.Attributor(model, train, task=task, method="cg", damping=1e-6, max_iter=2, progress=False).fit()
    with pytest.warns(inf.InfluenceWarning, match="did not converge"):
        attr.scores(test)
    assert attr.diagnostics["converged"] is False
