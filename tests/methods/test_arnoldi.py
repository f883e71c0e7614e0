"""`method="arnoldi"` against dense eigendecompositions of independently built curvatures."""

import pytest
import torch

import influence as inf
from tests.methods._reference import ggn, hessian, per_example_grads


def truncated_scores(H, G_test, G_train, damping, rank):
    """G_test U_r diag(1/(e + λ)) U_rᵀ G_trainᵀ over the `rank` eigenpairs of largest |e|."""
    e, U = torch.linalg.eigh(H)
    keep = e.abs().argsort(descending=True)[:rank]
    e, U = e[keep], U[:, keep]
    return (G_test @ U) / (e + damping) @ (G_train @ U).T


def references(model, task, train, test, curvature):
    X, y = train
    H = ggn(model, X) if curvature == "ggn" else hessian(model, task, X, y)
    H = H + task.weight_decay * torch.eye(len(H), dtype=H.dtype)
    return H, per_example_grads(model, task.loss, *test), per_example_grads(model, task.loss, X, y)


@pytest.mark.parametrize("fixture,curvature", [("logreg", "ggn"), ("mlp", "ggn"), ("mlp", "hessian")])
def test_full_rank_equals_exact(request, fixture, curvature):
    model, task, train, test = request.getfixturevalue(fixture)
    p = sum(t.numel() for t in model.parameters())
    H, Gt, Gtr = references(model, task, train, test, curvature)
    damping = 0.05
    got = inf.Attributor(model, train, task=task, method="arnoldi", rank=p, damping=damping, curvature=curvature,
                         progress=False).fit().scores(test)
    expected = Gt @ torch.linalg.solve(H + damping * torch.eye(p, dtype=H.dtype), Gtr.T)
    assert torch.allclose(got, expected, rtol=1e-7, atol=1e-9 * expected.abs().max())


@pytest.mark.parametrize("rank", [1, 7, 20])
def test_low_rank_scores_use_the_top_eigenspace(mlp, rank):
    model, task, train, test = mlp
    H, Gt, Gtr = references(model, task, train, test, "ggn")
    attr = inf.Attributor(model, train, task=task, method="arnoldi", rank=rank, krylov_dim=len(H), damping=0.02,
                          progress=False).fit()
    assert torch.allclose(attr.scores(test), truncated_scores(H, Gt, Gtr, 0.02, rank), rtol=1e-7, atol=1e-10)
    e = torch.linalg.eigvalsh(H).flip(0)[:rank]
    assert torch.allclose(torch.tensor(attr.diagnostics["eigenvalues"], dtype=e.dtype), e, rtol=1e-8)


def test_a_partial_krylov_space_finds_the_dominant_eigenvalues(mlp):
    model, task, train, test = mlp
    H, _, _ = references(model, task, train, test, "ggn")
    e = torch.linalg.eigvalsh(H).flip(0)[:5]
    attr = inf.Attributor(model, train, task=task, method="arnoldi", rank=5, krylov_dim=24, block_size=3,
                          progress=False).fit()
    got = torch.tensor(attr.diagnostics["eigenvalues"], dtype=e.dtype)
    assert torch.allclose(got, e, rtol=1e-6), (got, e)
    assert attr.diagnostics["ritz_residual"] < 1e-3
    default = inf.Attributor(model, train, task=task, method="arnoldi", rank=5, progress=False).fit()
    assert default.diagnostics["krylov_dim"] == 10


def test_negative_eigenvalues_are_reported(mlp):
    _, _, train, test = mlp
    torch.manual_seed(1)  # an untrained MLP without weight decay: indefinite Hessian
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    task = inf.ClassificationTask()
    e = torch.linalg.eigvalsh(hessian(model, task, *train))
    assert (e < -1e-8).sum() >= 2, "the reference Hessian should be indefinite"
    attr = inf.Attributor(model, train, task=task, method="arnoldi", rank=len(e), curvature="hessian", damping=1e-6,
                          indefinite="warn", progress=False).fit()  # keep λ (the default raises it)
    assert attr.diagnostics["negative_eigenvalues"] == int((e < -1e-8).sum())
    assert attr.diagnostics["negative_curvature"] is True
    with pytest.warns(inf.InfluenceWarning, match="negative eigenvalues"):
        attr.scores(test)


def test_the_index_is_rank_dimensional_on_disk_and_reloads(mlp, tmp_path):
    model, task, train, test = mlp
    H, Gt, Gtr = references(model, task, train, test, "ggn")
    attr = inf.Attributor(model, train, task=task, method="arnoldi", rank=6, krylov_dim=len(H), damping=0.03,
                          cache_dir=tmp_path, storage_dtype="float64", progress=False).fit()
    assert attr.diagnostics["feature_dim"] == 6 and attr.index.dim == 6
    expected = truncated_scores(H, Gt, Gtr, 0.03, 6)
    assert torch.allclose(attr.scores(test), expected, rtol=1e-7, atol=1e-10)
    loaded = inf.Attributor.load(tmp_path, model, task=task)
    assert torch.allclose(loaded.scores(test), expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("options,match", [({"rank": 0}, "`rank`"), ({"block_size": 1.5}, "`block_size`"),
                                           ({"rank": 10, "krylov_dim": 5}, "`krylov_dim`")])
def test_bad_options_name_the_argument(logreg, options, match):
    model, task, train, _ = logreg
    with pytest.raises(inf.InvalidArgumentError, match=match):
        inf.Attributor(model, train, task=task, method="arnoldi", **options)
