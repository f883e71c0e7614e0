"""Iterative methods against `exact`, and their failure diagnostics."""

import warnings

import pytest
import torch
from scipy.stats import spearmanr

import influence as inf
from influence.solvers import conjugate_gradient, lissa

pytestmark = pytest.mark.cross_cpu  # compares computation paths: run again under another CPU capability


@pytest.mark.parametrize("method, options", [("cg", {}), ("cg", {"preconditioner_rank": 0}),
                                             ("cg", {"preconditioner_rank": 8}), ("lissa", {})])
def test_iterative_methods_agree_with_exact_on_damped_mlp(mlp, method, options):
    model, task, train, test = mlp
    exact = inf.Attributor(model, train, task=task, method="exact", progress=False).fit().scores(test)
    attr = inf.Attributor(model, train, task=task, method=method, progress=False, **options).fit()
    got = attr.scores(test)
    assert spearmanr(exact.flatten(), got.flatten())[0] >= 0.99
    assert (got - exact).norm() / exact.norm() < 1e-3
    assert attr.diagnostics["last_solve"]["converged"] is True


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


def test_cg_method_preconditioner_cuts_iterations_and_survives_reload(mlp, tmp_path):
    model, task, train, test = mlp
    plain = inf.Attributor(model, train, task=task, method="cg", preconditioner_rank=0, progress=False).fit()
    expected = plain.scores(test)
    attr = inf.Attributor(model, train, task=task, method="cg", preconditioner_rank=12, cache_dir=tmp_path,
                          progress=False).fit()
    got = attr.scores(test)
    assert attr.diagnostics["preconditioner"]["rank"] == 12
    assert attr.diagnostics["last_solve"]["iterations"] < plain.diagnostics["last_solve"]["iterations"]
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    loaded = inf.Attributor.load(tmp_path, model, task=task)
    assert torch.allclose(loaded.scores(test), got, rtol=1e-10, atol=0)
    assert loaded.diagnostics["last_solve"]["iterations"] == attr.diagnostics["last_solve"]["iterations"]
    with pytest.raises(inf.InvalidArgumentError, match="preconditioner_rank"):
        inf.Attributor(model, train, task=task, method="cg", preconditioner_rank=-1)


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
    attr = inf.Attributor(model, train, task=task, method="cg", damping=1e-6, max_iter=2, preconditioner_rank=0,
                          progress=False).fit()
    with pytest.warns(inf.InfluenceWarning, match="did not converge"):
        attr.scores(test)
    assert attr.diagnostics["last_solve"]["converged"] is False


def test_cg_falls_back_to_plain_cg_when_the_preconditioned_solve_diverges(mlp, monkeypatch):
    model, task, train, test = mlp
    expected = inf.Attributor(model, train, task=task, method="cg", preconditioner_rank=0,
                              progress=False).fit().scores(test)
    attr = inf.Attributor(model, train, task=task, method="cg", preconditioner_rank=12, progress=False).fit()
    monkeypatch.setattr(attr.method, "preconditioner", lambda: (lambda R: R * float("inf")))  # overflows
    got = attr.scores(test)
    solve = attr.diagnostics["last_solve"]
    assert solve["notes"] == ["the preconditioned solve diverged; solved without the preconditioner"]
    assert solve["converged"] is True
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-8)


def float32_mlp():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(400, 8, generator=gen)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long() + (X[:, 2] > 0.8).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    from influence.demos.training import train_adam

    train_adam(model, X, y, inf.ClassificationTask(weight_decay=1e-3), epochs=300, lr=0.02)
    return model, (X, y), (X[:20], y[:20])


def test_no_false_alarm_on_a_float32_solve_that_matches_exact():
    model, train, test = float32_mlp()
    task = inf.ClassificationTask(weight_decay=1e-3)
    exact = inf.Attributor(model, train, task=task, method="exact", progress=False).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error", inf.InfluenceWarning)
        cg = inf.Attributor(model, train, task=task, method="cg", progress=False).fit()
        got, self_influence = cg.scores(test), cg.self_influence()
    expected = exact.scores(test)
    assert (got - expected).norm() / expected.norm() < 1e-4
    torch.testing.assert_close(self_influence, exact.self_influence(), rtol=1e-3, atol=0)
    assert cg.diagnostics["last_solve"]["converged"] is True


def test_an_unconverged_self_influence_warns_once_with_the_right_advice(mlp, monkeypatch):
    from influence import scoring

    model, task, train, _ = mlp
    attr = inf.Attributor(model, train, task=task, method="cg", damping=1e-6, max_iter=2, preconditioner_rank=0,
                          progress=False).fit()
    original = scoring.self_influence
    monkeypatch.setattr(scoring, "self_influence", lambda *args: original(*args, block=7))  # 13 blocks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attr.self_influence()
    messages = [str(w.message) for w in caught if issubclass(w.category, inf.InfluenceWarning)]
    assert len(messages) == 1 and "raise max_iter" in messages[0]
    assert attr.diagnostics["last_solve"]["max_iter_reached"] is True


def test_an_inaccurate_preconditioner_is_dropped_with_a_warning(mlp, monkeypatch):
    import influence.methods.cg as cg_module

    model, task, train, test = mlp
    expected = inf.Attributor(model, train, task=task, method="cg", preconditioner_rank=0,
                              progress=False).fit().scores(test)
    real = cg_module.top_eigenpairs
    monkeypatch.setattr(cg_module, "top_eigenpairs", lambda *a, **k: (*real(*a, **k)[:2], 1.4))
    with pytest.warns(inf.InfluenceWarning, match="preconditioner's eigenpairs are inaccurate"):
        attr = inf.Attributor(model, train, task=task, method="cg", preconditioner_rank=12, progress=False).fit()
    assert attr.diagnostics["preconditioner"]["dropped"] and attr.method.preconditioner() is None
    torch.testing.assert_close(attr.scores(test), expected, rtol=1e-9, atol=1e-9)
