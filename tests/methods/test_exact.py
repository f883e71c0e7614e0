"""`method="exact"` against brute-force float64 Hessians built with torch.autograd.functional."""

import pytest
import torch
from torch.autograd.functional import hessian, jacobian

import influence as inf


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def loss_of_flat(model, task, X, y):
    shapes = [p.shape for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]

    def f(theta):
        parts, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = shape.numel()
            parts[name] = theta[offset:offset + size].view(shape)
            offset += size
        return torch.func.functional_call(model, parts, (X,))

    return f


def brute_force_scores(model, task, train, test, damping, curvature):
    """Explicit float64 curvature + explicit per-example gradients, one example at a time."""
    X, y = train
    Xt, yt = test
    theta = flat_params(model)
    f = loss_of_flat(model, task, X, y)
    mean_loss = lambda th: task.loss(f(th), y).mean()
    if curvature == "hessian":
        H = hessian(mean_loss, theta)
    else:
        J = jacobian(f, theta)  # [n, C, p]
        P = torch.softmax(f(theta), dim=1)
        H_out = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]
        H = torch.einsum("ncp,ncd,ndq->pq", J, H_out, J) / len(y)
    H = H + (task.weight_decay + damping) * torch.eye(len(theta), dtype=theta.dtype)

    def grad_at(x, label):
        g = loss_of_flat(model, task, x[None], label[None])
        return torch.autograd.functional.jacobian(lambda th: task.loss(g(th), label[None]).sum(), theta)

    G_train = torch.stack([grad_at(X[i], y[i]) for i in range(len(y))])
    G_test = torch.stack([grad_at(Xt[j], yt[j]) for j in range(len(yt))])
    return G_test @ torch.linalg.solve(H, G_train.T)


@pytest.mark.parametrize("curvature", ["ggn", "hessian"])
def test_exact_matches_brute_force_logreg(logreg, curvature):
    model, task, train, test = logreg
    attr = inf.Attributor(model, train, task=task, method="exact", damping=1e-3, curvature=curvature,
                          progress=False).fit()
    expected = brute_force_scores(model, task, train, test, 1e-3, curvature)
    got = attr.scores(test)
    assert got.shape == (len(test[1]), len(train[1]))
    assert (got - expected).norm() / expected.norm() < 1e-8


@pytest.mark.parametrize("curvature", ["ggn", "hessian"])
def test_exact_matches_brute_force_mlp(mlp, curvature):
    model, task, train, test = mlp
    damping = 0.05  # enough to make the MLP's damped Hessian positive definite here
    attr = inf.Attributor(model, train, task=task, method="exact", damping=damping, curvature=curvature,
                          progress=False).fit()
    expected = brute_force_scores(model, task, train, test, damping, curvature)
    assert (attr.scores(test) - expected).norm() / expected.norm() < 1e-8


def test_ggn_equals_hessian_for_affine_model(logreg):
    model, task, train, test = logreg
    a = inf.Attributor(model, train, task=task, method="exact", damping=0.0, curvature="ggn", progress=False).fit()
    b = inf.Attributor(model, train, task=task, method="exact", damping=0.0, curvature="hessian",
                       progress=False).fit()
    assert torch.allclose(a.scores(test), b.scores(test), rtol=1e-9, atol=1e-12)


def test_trained_mlp_hessian_has_negative_eigenvalues_and_is_reported():
    """Off the optimum (as after early stopping) the Hessian is indefinite; GGN is not."""
    torch.manual_seed(0)
    from tests.conftest import make_blobs

    X, y = make_blobs(60, 4, 3, seed=5)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    task = inf.ClassificationTask()
    with pytest.warns(inf.InfluenceWarning, match="indefinite .* damping raised"):
        hess = inf.Attributor(model, (X, y), task=task, method="exact", damping=0.0, curvature="hessian",
                              progress=False).fit()
    with pytest.warns(inf.InfluenceWarning, match="singular .* damping raised"):  # λ = 0 on a singular GGN
        ggn = inf.Attributor(model, (X, y), task=task, method="exact", damping=0.0, curvature="ggn",
                             progress=False).fit()
    assert hess.diagnostics["negative_eigenvalues"] > 0 and hess.damping > 0
    assert ggn.diagnostics["eigenvalue_min"] > -1e-10
