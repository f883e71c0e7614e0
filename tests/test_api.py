"""The public API: data forms, top-k, groups, parameter subsets, damping."""

import warnings

import datasets
import pytest
import torch

import influence as inf
from influence import scoring
from influence.model import FunctionalModel, is_affine_in_parameters

pytestmark = pytest.mark.cross_cpu  # compares computation paths: run again under another CPU capability


def test_top_k_matches_sorting_the_full_matrix(mlp):
    model, task, train, test = mlp
    attr = inf.Attributor(model, train, task=task, method="exact", progress=False).fit()
    full = attr.scores(test)
    top = attr.top_k(test, k=7)
    assert top.helpful.indices.shape == (len(test[1]), 7)
    assert torch.equal(top.helpful.scores, full.sort(dim=1, descending=True).values[:, :7])
    assert torch.equal(top.harmful.scores, full.sort(dim=1).values[:, :7])
    assert torch.equal(torch.gather(full, 1, top.harmful.indices), top.harmful.scores)
    table = top.to_pandas()
    assert len(table) == 2 * 7 * len(test[1])


def test_top_k_streams_over_blocks(mlp, monkeypatch):
    model, task, train, test = mlp
    attr = inf.Attributor(model, train, task=task, method="exact", progress=False).fit()
    full = attr.scores(test)
    original = scoring.score_blocks
    monkeypatch.setattr(scoring, "score_blocks", lambda Q, index: original(Q, index, block=13))
    top = attr.top_k(test, k=5)
    # other block shapes round differently (on some CPUs): equal to float64 rounding, same ranking
    torch.testing.assert_close(top.helpful.scores, full.sort(dim=1, descending=True).values[:, :5],
                               rtol=1e-12, atol=1e-12 * float(full.abs().max()))
    assert torch.equal(top.harmful.indices, full.sort(dim=1).indices[:, :5])


def test_k_larger_than_train_returns_everything(logreg):
    model, task, train, test = logreg
    attr = inf.Attributor(model, train, task=task, method="identity", progress=False).fit()
    assert attr.top_k(test, k=10_000).helpful.indices.shape == (len(test[1]), len(train[1]))


def to_hf(X, y, extra=None):
    columns = {"input": X.tolist(), "label": y.tolist(), **(extra or {})}
    return datasets.Dataset.from_dict(columns).with_format(None)


def test_data_forms_give_identical_scores(logreg):
    model, task, (X, y), test = logreg

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return X[i], y[i]

    X32 = X.float()  # a datasets.Dataset built from Python floats stores float32 here
    hf = to_hf(X32, y)
    results = [inf.Attributor(model, data, task=task, method="exact", damping=1e-3, progress=False).fit().scores(test)
               for data in ((X, y), Pairs(), (X32, y), hf)]
    assert torch.allclose(results[0], results[1], rtol=1e-12)
    assert torch.allclose(results[2], results[3], rtol=1e-12)


def test_group_scores_are_sums_over_groups(logreg):
    model, task, (X, y), test = logreg
    sources = [f"s{i % 4}" for i in range(len(y))]
    hf = to_hf(X, y, {"source": sources})
    attr = inf.Attributor(model, hf, task=task, method="exact", progress=False).fit()
    full = attr.scores(test)
    by_column = attr.group_scores(test, "source")
    by_list = attr.group_scores(test, sources)
    assert by_column.groups == ["s0", "s1", "s2", "s3"]
    for c, g in enumerate(by_column.groups):
        members = torch.tensor([s == g for s in sources])
        assert torch.allclose(by_column.sum[:, c], full[:, members].sum(dim=1))
        assert by_column.count[c] == members.sum()
    assert torch.equal(by_column.sum, by_list.sum)
    assert torch.allclose(by_column.mean, by_column.sum / by_column.count)
    assert len(by_column.to_pandas()) == 4 * len(test[1])


def test_parameter_subset_equals_frozen_backbone(mlp):
    model, task, train, test = mlp
    head_task = inf.ClassificationTask(weight_decay=task.weight_decay, parameters=["2"])
    subset = inf.Attributor(model, train, task=head_task, method="exact", damping=1e-3, progress=False).fit()
    frozen = __import__("copy").deepcopy(model)
    for p in frozen[0].parameters():
        p.requires_grad_(False)
    reference = inf.Attributor(frozen, train, task=inf.ClassificationTask(weight_decay=task.weight_decay),
                               method="exact", damping=1e-3, progress=False).fit()
    assert subset.fm.p == 6 * 3 + 3
    assert torch.allclose(subset.scores(test), reference.scores(test), rtol=1e-10)


def test_affine_detection(logreg, mlp):
    lin, _, (X, _), _ = logreg
    net, _, (Xm, _), _ = mlp
    assert is_affine_in_parameters(FunctionalModel(lin), X[:10])
    assert not is_affine_in_parameters(FunctionalModel(net), Xm[:10])
    assert is_affine_in_parameters(FunctionalModel(net, ["2"]), Xm[:10])  # a linear head on fixed features


def test_auto_damping_is_scale_aware(logreg):
    """Scaling the loss by c scales H by c: the auto damping follows, so scores scale by 1 exactly
    (∇ℓ scales by c twice, (H + λI)⁻¹ by 1/c)."""
    model, task, train, test = logreg

    class Scaled(inf.ClassificationTask):
        def loss(self, outputs, targets):
            return 10.0 * super().loss(outputs, targets)

        def output_hessian_vp(self, outputs, targets, u):
            return 10.0 * super().output_hessian_vp(outputs, targets, u)

    base = inf.Attributor(model, train, task=inf.ClassificationTask(), method="exact", progress=False).fit()
    scaled = inf.Attributor(model, train, task=Scaled(), method="exact", progress=False).fit()
    assert scaled.damping == pytest.approx(10 * base.damping, rel=1e-9)
    assert torch.allclose(scaled.scores(test), 10 * base.scores(test), rtol=1e-8)
    assert "auto" in base.diagnostics["damping_source"]


def test_auto_damping_uses_mean_eigenvalue(logreg, mlp):
    from influence.damping import DAMPING_RATIO_CONVEX, DAMPING_RATIO_NONCONVEX

    for (model, task, train, test), ratio in ((logreg, DAMPING_RATIO_CONVEX), (mlp, DAMPING_RATIO_NONCONVEX)):
        attr = inf.Attributor(model, train, task=task, method="exact", progress=False).fit()
        mean_eig = float(attr.method.eigenvalues.mean())
        assert attr.damping == pytest.approx(ratio * mean_eig, rel=1e-9)
        cg = inf.Attributor(model, train, task=task, method="cg", progress=False).fit()  # the same λ: exact trace
        assert cg.damping == pytest.approx(attr.damping, rel=1e-9)


def test_model_is_left_untouched(mlp):
    model, task, train, test = mlp
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    inf.Attributor(model, train, task=task, method="cg", progress=False).fit().scores(test)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", ["exact", "cg", "lissa", "arnoldi", "ekfac", "trak", "identity", "auto"])
def test_a_model_left_in_train_mode_is_attributed_in_eval_mode(method):
    torch.manual_seed(0)
    X, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)).double()
    model.train()
    options = {"rank": 20} if method == "arnoldi" else {"projection_dim": 16} if method == "trak" else {}
    attr = inf.Attributor(model, (X, y), method=method, damping=0.1, progress=False, **options).fit()
    scores, self_influence = attr.scores((X[:3], y[:3])), attr.self_influence()
    assert model.training and model[1].training  # the caller's mode is restored
    model.eval()
    reference = inf.Attributor(model, (X, y), method=method, damping=0.1, progress=False, **options).fit()
    torch.testing.assert_close(scores, reference.scores((X[:3], y[:3])), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(self_influence, reference.self_influence(), rtol=1e-9, atol=1e-12)


def test_suspicious_models_are_warned_about(logreg):
    model, task, train, _ = logreg
    with warnings.catch_warnings():
        warnings.simplefilter("error", inf.InfluenceWarning)  # a trained model: no warning
        inf.Attributor(model, train, task=task, method="exact", progress=False).fit()
    untrained = torch.nn.Linear(5, 3).double()
    torch.nn.init.zeros_(untrained.weight)
    torch.nn.init.zeros_(untrained.bias)
    with pytest.warns(inf.InfluenceWarning, match="looks untrained"):
        inf.Attributor(untrained, train, task=task, method="exact", progress=False).fit()
    probabilities = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    with pytest.warns(inf.InfluenceWarning, match="look like probabilities"):
        inf.Attributor(probabilities, train, task=task, method="exact", progress=False).fit()


def test_a_single_example_without_batch_dimension_is_a_clear_error(logreg):
    model, task, train, test = logreg
    attr = inf.Attributor(model, train, task=task, method="exact", progress=False).fit()
    with pytest.raises(inf.InvalidArgumentError, match="one example without a batch dimension"):
        attr.scores((test[0][0], test[1][:1]))


def test_options_objects_are_accepted_beside_flat_keywords():
    torch.manual_seed(0)
    X, y = torch.randn(40, 3, dtype=torch.float64), torch.randint(0, 2, (40,))
    model = torch.nn.Linear(3, 2).double()
    flat = inf.Attributor(model, (X, y), method="cg", tol=1e-9, max_iter=50, progress=False)
    given = inf.Attributor(model, (X, y), options=inf.CGOptions(tol=1e-9, max_iter=50),
                           progress=False)
    mixed = inf.Attributor(model, (X, y), method="cg", options=inf.CGOptions(tol=1e-3), tol=1e-9,
                           max_iter=50, progress=False)
    assert given.method.name == mixed.method.name == "cg"  # method="auto": the options name it
    # flat keywords override the object's fields:
    assert flat.method.options == given.method.options == mixed.method.options
    with pytest.raises(inf.InvalidArgumentError, match="for method 'cg', but method='exact'"):
        inf.Attributor(model, (X, y), method="exact", options=inf.CGOptions())
    with pytest.raises(inf.InvalidArgumentError, match="`options` must be a method's options"):
        inf.Attributor(model, (X, y), options={"tol": 1e-3})
