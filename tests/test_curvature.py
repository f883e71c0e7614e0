"""Curvature products: the fused linear-head path and the generic torch.func path agree
with each other and with explicit float64 matrices."""

import copy

import torch

import influence as inf
from influence.curvature import Curvature
from influence.data import as_data
from influence.model import FunctionalModel
from tests.conftest import make_blobs


def products(model, task, X, y, fused, kind="ggn"):
    fm = FunctionalModel(model, task.parameters)
    curvature = Curvature(fm, task, as_data((X, y), "train"), kind, batch_size=17, fused_head=fused)
    V = torch.randn(5, fm.p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return curvature, V, curvature.matvec(V)


def test_fused_head_equals_generic_for_linear_model():
    X, y = make_blobs(80, 7, 4, seed=0)
    task = inf.ClassificationTask(weight_decay=0.1)
    model = torch.nn.Linear(7, 4).double()
    fused, V, a = products(model, task, X, y, fused=True)
    generic, _, b = products(model, task, X, y, fused=False)
    assert fused.head is not None and generic.head is None
    assert "fused" in fused.backend
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    _, _, h = products(model, task, X, y, fused=False, kind="hessian")
    assert torch.allclose(a, h, rtol=1e-10, atol=1e-14)


def test_fused_head_on_frozen_backbone_and_without_bias(mlp):
    model, task, (X, y), _ = mlp
    head_task = inf.ClassificationTask(weight_decay=0.01, parameters=["2"])
    fused, V, a = products(model, head_task, X, y, fused=True)
    _, _, b = products(model, head_task, X, y, fused=False)
    assert fused.head is not None and torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    nobias = torch.nn.Sequential(copy.deepcopy(model[0]), torch.nn.Tanh(), torch.nn.Linear(6, 3, bias=False)).double()
    fused, _, a = products(nobias, head_task, X, y, fused=True)
    _, _, b = products(nobias, head_task, X, y, fused=False)
    assert fused.head is not None and torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_fused_path_not_used_when_it_does_not_apply(mlp):
    model, task, (X, y), _ = mlp
    whole, _, _ = products(model, task, X, y, fused=True)  # all layers attributed
    assert whole.head is None

    class Scaled(inf.ClassificationTask):
        def loss(self, outputs, targets):
            return 2 * super().loss(outputs, targets)

    lin = torch.nn.Linear(4, 3).double()
    custom, _, _ = products(lin, Scaled(), X, y, fused=True)  # not plain cross-entropy
    assert custom.head is None
    scaled_out = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1)).double()
    transformed, _, _ = products(scaled_out, inf.ClassificationTask(parameters=["0"]), X, y, fused=True)
    assert transformed.head is None  # the head's output is transformed before it is returned


def test_ggn_product_matches_explicit_matrix(mlp):
    model, task, (X, y), _ = mlp
    curvature, V, got = products(model, task, X, y, fused=False)
    fm = curvature.fm
    J = torch.autograd.functional.jacobian(lambda th: fm(th, X), fm.theta)  # [n, C, p]
    P = torch.softmax(fm(fm.theta, X), dim=1).detach()
    H_out = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]
    G = torch.einsum("ncp,ncd,ndq->pq", J, H_out, J) / len(y) + task.weight_decay * torch.eye(fm.p, dtype=X.dtype)
    assert torch.allclose(got, V @ G, rtol=1e-10, atol=1e-12)


def test_dense_ggn_from_jacobians_equals_p_products(mlp):
    model, task, (X, y), _ = mlp
    for regression in (False, True):
        t = inf.RegressionTask(weight_decay=0.1) if regression else task
        targets = torch.randn(len(y), 3, dtype=X.dtype) if regression else y
        curvature = Curvature(FunctionalModel(model), t, as_data((X, targets), "train"), "ggn", batch_size=17)
        from_products = torch.cat([curvature.matvec(row) for row in torch.eye(curvature.p, dtype=X.dtype).split(7)])
        torch.testing.assert_close(curvature._ggn_dense(max_elements=100), from_products, rtol=1e-10, atol=1e-13)
        mean = float(from_products.diagonal().mean())
        assert abs(curvature.mean_eigenvalue() - mean) < 1e-10 * mean  # the exact trace, not an estimate


def test_fused_head_mean_eigenvalue_is_the_exact_trace():
    X, y = make_blobs(80, 7, 4, seed=0)
    fused, _, _ = products(torch.nn.Linear(7, 4).double(), inf.ClassificationTask(weight_decay=0.1), X, y, fused=True)
    dense = fused.dense()
    assert abs(fused.mean_eigenvalue() - float(dense.diagonal().mean())) < 1e-10


def test_attributor_reports_fused_backend():
    X, y = make_blobs(60, 5, 3, seed=2)
    model = torch.nn.Linear(5, 3).double()
    attr = inf.Attributor(model, (X, y), method="cg", damping=0.01, progress=False).fit()
    assert "fused" in attr.diagnostics["curvature_backend"]


def test_the_backend_names_only_the_product_paths_that_ran():
    X, y = make_blobs(60, 5, 3, seed=2)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    ekfac = inf.Attributor(model, (X, y), method="ekfac", damping=0.01, progress=False).fit()
    assert ekfac.diagnostics["curvature_backend"].startswith("none")  # it factors its own curvature
    exact = inf.Attributor(model, (X, y), method="exact", damping=0.01, progress=False).fit()
    assert exact.diagnostics["curvature_backend"] == "torch.func per-example Jacobians (ggn)"
    head = inf.Attributor(torch.nn.Linear(5, 3).double(), (X, y), method="exact", damping=0.01,
                          progress=False).fit()
    assert head.diagnostics["curvature_backend"] == "fused linear head (kernels.ce_head_hvp)"
