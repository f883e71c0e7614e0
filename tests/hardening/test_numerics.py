"""Numerical health: indefinite curvature, solver divergence and float16 storage overflow
are detected, handled or refused loudly, never turned into silent garbage scores."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import influence as inf
from influence.solvers import conjugate_gradient, lissa
from tests.conftest import make_blobs
from tests.equality import assert_same_scores

# cross_cpu: compares computation paths (run again under another CPU capability in CI); the
# untrained MLP is deliberate (an indefinite Hessian).
pytestmark = [pytest.mark.cross_cpu, pytest.mark.filterwarnings("ignore:the model looks untrained")]


@pytest.fixture(scope="module")
def untrained_mlp():
    """An untrained tanh MLP without weight decay: its Hessian is indefinite."""
    X, y = make_blobs(60, 4, 3, seed=11)
    Xt, yt = make_blobs(5, 4, 3, seed=12)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    return model, inf.ClassificationTask(), (X, y), (Xt, yt)


def fit(problem, **kwargs):
    model, task, train, _ = problem
    return inf.Attributor(model, train, task=task, curvature="hessian", damping=1e-6, progress=False, **kwargs).fit()


def no_influence_warnings(fn):
    """Run fn; fail on any InfluenceWarning except the (deliberate) untrained-model one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    messages = [str(w.message) for w in caught if issubclass(w.category, inf.InfluenceWarning)]
    assert not [m for m in messages if "looks untrained" not in m], messages
    return out


def test_indefinite_hessian_raises_damping_and_reports_it(untrained_mlp):
    test = untrained_mlp[3]
    with pytest.warns(inf.InfluenceWarning, match=r"exact: the curvature is indefinite .* damping raised to"):
        exact = fit(untrained_mlp, method="exact")
    d = exact.diagnostics
    assert d["negative_eigenvalues"] > 0 and d["eigenvalue_min"] < -1e-3
    raised = d["damping_raised"]
    assert raised["from"] == 1e-6 and raised["to"] == exact.damping == pytest.approx(1e-6 - 2 * d["eigenvalue_min"])
    assert "raised from 1e-06" in d["damping_source"] and d["negative_curvature"] is False
    scores = no_influence_warnings(lambda: exact.scores(test))  # positive definite now: no query warning
    assert torch.isfinite(scores).all()

    with pytest.warns(inf.InfluenceWarning, match=r"cg: the curvature is indefinite .*Lanczos estimate"):
        cg = fit(untrained_mlp, method="cg", tol=1e-10)
    assert cg.diagnostics["damping_raised"]["smallest_eigenvalue"] == pytest.approx(d["eigenvalue_min"], rel=1e-6)
    got = no_influence_warnings(lambda: cg.scores(test))
    assert cg.diagnostics["last_solve"]["converged"] is True and cg.diagnostics["last_solve"]["negative_curvature"] is False
    same_damping = fit(untrained_mlp, method="exact", indefinite="warn").method
    reference = inf.Attributor(untrained_mlp[0], untrained_mlp[2], task=untrained_mlp[1], curvature="hessian",
                               method="exact", damping=cg.damping, progress=False).fit().scores(test)
    assert same_damping.damping == 1e-6
    torch.testing.assert_close(got, reference, rtol=1e-6, atol=1e-9)


def test_absolute_eigenvalue_option(untrained_mlp):
    attr = no_influence_warnings(lambda: fit(untrained_mlp, method="exact", indefinite="abs"))
    assert attr.damping == 1e-6 and "damping_raised" not in attr.diagnostics
    assert attr.diagnostics["negative_eigenvalues"] > 0 and attr.diagnostics["negative_curvature"] is False
    e, V = attr.method.eigenvalues, attr.method.eigenvectors
    G = attr.test_gradients(untrained_mlp[3])
    train_grads = attr.index.features
    expected = G @ V @ torch.diag(1 / (e.abs() + 1e-6)) @ V.T @ train_grads.T
    torch.testing.assert_close(no_influence_warnings(lambda: attr.scores(untrained_mlp[3])), expected)


def test_warn_option_keeps_damping_and_every_query_warns(untrained_mlp):
    attr = fit(untrained_mlp, method="exact", indefinite="warn")
    assert attr.damping == 1e-6 and attr.diagnostics["negative_curvature"] is True
    with pytest.warns(inf.InfluenceWarning, match="negative eigenvalues"):
        attr.scores(untrained_mlp[3])
    with pytest.raises(inf.InvalidArgumentError, match=r"`indefinite` must be one of \['raise_damping', 'warn'\]"):
        inf.Attributor(untrained_mlp[0], untrained_mlp[2], method="cg", indefinite="abs")


def test_raised_damping_is_stored_with_the_index(untrained_mlp, tmp_path):
    with pytest.warns(inf.InfluenceWarning, match="damping raised"):
        attr = fit(untrained_mlp, method="exact", cache_dir=tmp_path)
    loaded = no_influence_warnings(lambda: inf.Attributor.load(tmp_path, untrained_mlp[0], task=untrained_mlp[1]))
    assert loaded.damping == attr.damping and loaded.diagnostics["damping_raised"] == attr.diagnostics["damping_raised"]
    assert_same_scores(loaded.scores(untrained_mlp[3]), attr.scores(untrained_mlp[3]))


def test_lissa_divergence_is_an_error_with_the_residual(untrained_mlp):
    model, _, train, test = untrained_mlp
    attr = inf.Attributor(model, train, method="lissa", damping=0.1, scale=0.05, progress=False).fit()
    with pytest.raises(inf.InfluenceError, match=r"lissa diverged: relative residual \d\.\d+e\+0[89] after \d+ "
                                                 r"iterations.*a larger `scale`"):
        attr.scores(test)
    d = attr.diagnostics["last_solve"]
    assert d["diverged"] is True and d["converged"] is False and 1e8 <= d["residual"] < float("inf")


def test_cg_divergence_is_detected_with_the_residual():
    # an indefinite operator whose negative curvature hides from the first direction
    # (pᵀAp = 2e-6 > 0): the step is huge and the residual explodes
    A = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    B = torch.tensor([[1.0, 1.0 - 1e-6]], dtype=torch.float64)
    X, info = conjugate_gradient(lambda V: V @ A, B, damping=0.0, max_iter=1)
    assert info.diverged and not info.converged and info.residual > 1e5
    # products that overflow
    _, info = conjugate_gradient(lambda V: V * float("inf"), B, damping=0.0, max_iter=5)
    assert info.diverged and not info.converged
    # LiSSA: the residual of the last finite iterate is reported
    _, info = lissa(lambda V: V @ torch.eye(2, dtype=torch.float64) * 10, B, damping=0.0, scale=1.0, max_iter=100)
    assert info.diverged and 1e8 < info.residual < float("inf")


def test_zero_curvature_without_damping_is_refused():
    X, y = torch.randn(8, 3), torch.zeros(8, dtype=torch.long)
    model = torch.nn.Linear(3, 1)  # one class: the loss is 0 everywhere, so is its curvature
    for method in ("exact", "lissa", "arnoldi"):  # the methods that invert H + λI itself
        with pytest.raises(inf.InfluenceError, match="curvature is zero and damping is 0|pass damping > 0"):
            inf.Attributor(model, (X, y), method=method, damping=0.0, progress=False).fit()
    # CG only solves (H + λI) x = g: with g = 0 the answer is 0, finite and right
    cg = inf.Attributor(model, (X, y), method="cg", damping=0.0, progress=False).fit()
    assert torch.equal(cg.scores((X, y)), torch.zeros(8, 8))


def test_float16_overflow_is_refused_and_the_index_stays_incomplete(tmp_path):
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 4, generator=gen, dtype=torch.float64) * 1e6, torch.randint(0, 3, (40,), generator=gen)
    model = torch.nn.Linear(4, 3).double()
    settings = dict(method="identity", cache_dir=tmp_path, storage_dtype="float16", shard_size=16, progress=False)
    with pytest.raises(inf.InfluenceError, match=r"shard features-00000: gradient values up to [\d.e+]+ overflow "
                                                 r"float16 \(max 65504\); use storage_dtype='bfloat16'"):
        inf.Attributor(model, (X, y), **settings).fit()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] is False and not list((tmp_path / "shards").glob("*.npy"))
    with pytest.raises(inf.IndexFolderError, match="incomplete"):
        inf.Attributor.load(tmp_path, model)
    with pytest.raises(inf.InfluenceError, match="overflow float16"):  # a retry fails the same way
        inf.Attributor(model, (X, y), **settings).fit()
    bf16 = inf.Attributor(model, (X, y), **{**settings, "cache_dir": tmp_path / "bf16", "storage_dtype": "bfloat16"})
    assert torch.isfinite(bf16.fit().scores((X[:2], y[:2]))).all()
