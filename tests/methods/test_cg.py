"""`method="cg"` against `exact`, its preconditioner and what it says when a solve goes wrong."""

import warnings

import pytest
import torch
from scipy.stats import spearmanr

import influence as inf

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
