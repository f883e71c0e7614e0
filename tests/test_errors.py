"""Bad input raises our own exception naming the argument."""

import datasets
import pytest
import torch

import influence as inf


@pytest.fixture
def small():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3), torch.randn(20, 4), torch.randint(0, 3, (20,))


def test_mismatched_label_count(small):
    model, X, y = small
    with pytest.raises(inf.InvalidArgumentError, match=r"`train` has 20 inputs but 19 labels"):
        inf.Attributor(model, (X, y[:19]))


def test_labels_out_of_range(small):
    model, X, y = small
    y = y.clone()
    y[5] = 3
    with pytest.raises(inf.InvalidArgumentError, match=r"labels of `train` must lie in \[0, 2\].*found label 3"):
        inf.Attributor(model, (X, y), progress=False).fit()
    attr = inf.Attributor(model, (X, small[2]), progress=False).fit()
    with pytest.raises(inf.InvalidArgumentError, match=r"labels of `test`.*found label -1"):
        attr.scores((X[:2], torch.tensor([0, -1])))


def test_float_labels_rejected(small):
    model, X, y = small
    with pytest.raises(inf.InvalidArgumentError, match="must be integers"):
        inf.Attributor(model, (X, y.float()), progress=False).fit()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features(small, bad):
    model, X, y = small
    X = X.clone()
    X[7, 2] = bad
    with pytest.raises(inf.InvalidArgumentError, match=r"`train` has NaN or infinite input values \(first at example 7\)"):
        inf.Attributor(model, (X, y), progress=False).fit()
    attr = inf.Attributor(model, small[1:], progress=False).fit()
    with pytest.raises(inf.InvalidArgumentError, match="`test` has NaN"):
        attr.top_k((X[5:9], y[5:9]))


def test_empty_dataset(small):
    model, X, y = small
    with pytest.raises(inf.InvalidArgumentError, match="`train` is empty"):
        inf.Attributor(model, (X[:0], y[:0]))
    with pytest.raises(inf.InvalidArgumentError, match="`train` is empty"):
        inf.Attributor(model, datasets.Dataset.from_dict({"input": [], "label": []}))


def test_unknown_method_lists_valid_ones(small):
    model, X, y = small
    with pytest.raises(ValueError, match=r"method must be one of \[.*\], got 'newton'") as info:
        inf.Attributor(model, (X, y), method="newton")
    assert all(f"'{name}'" in str(info.value) for name in ("cg", "exact", "identity", "lissa"))


def test_unknown_option(small):
    model, X, y = small
    with pytest.raises(inf.InvalidArgumentError, match=r"unknown option\(s\) \['tolerance'\] for method 'cg'"):
        inf.Attributor(model, (X, y), method="cg", tolerance=1e-3)


def test_no_trainable_parameters(small):
    model, X, y = small
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(inf.InvalidArgumentError, match="`model` has no trainable parameters"):
        inf.Attributor(model, (X, y))


def test_unknown_parameter_name(small):
    model, X, y = small
    with pytest.raises(inf.InvalidArgumentError, match=r"task.parameters names \['head'\]"):
        inf.Attributor(model, (X, y), task=inf.ClassificationTask(parameters=["head"]))


@pytest.mark.parametrize("kwargs, pattern", [
    ({"damping": -1.0}, "`damping` must be a finite number >= 0"),
    ({"damping": float("nan")}, "`damping` must be a finite number"),
    ({"batch_size": 0}, "`batch_size` must be a positive integer"),
    ({"curvature": "fisher"}, r"`curvature` must be one of \['ggn', 'hessian'\]"),
])
def test_bad_settings(small, kwargs, pattern):
    model, X, y = small
    with pytest.raises(inf.InvalidArgumentError, match=pattern):
        inf.Attributor(model, (X, y), **kwargs)


def test_bad_data_types(small):
    model, X, y = small
    with pytest.raises(inf.InvalidArgumentError, match="`train` must be a datasets.Dataset"):
        inf.Attributor(model, X)
    with pytest.raises(inf.InvalidArgumentError, match=r"`train` as a tuple must be \(inputs, labels\)"):
        inf.Attributor(model, (X, y, y))
    with pytest.raises(inf.InvalidArgumentError, match="`model` must be a torch.nn.Module"):
        inf.Attributor(lambda x: x, (X, y))


def test_missing_columns_and_groups(small):
    model, X, y = small
    hf = datasets.Dataset.from_dict({"features": X.tolist(), "label": y.tolist()})
    with pytest.raises(inf.InvalidArgumentError, match=r"no column 'input' \(set by input_column\)"):
        inf.Attributor(model, hf)
    attr = inf.Attributor(model, hf, input_column="features", progress=False).fit()
    with pytest.raises(inf.InvalidArgumentError, match=r"names the column 'source', which `train` does not have"):
        attr.group_scores((X[:2], y[:2]), "source")
    with pytest.raises(inf.InvalidArgumentError, match="`groups` has 3 entries but the training set has 20"):
        attr.group_scores((X[:2], y[:2]), ["a", "b", "c"])


def test_query_before_fit_and_bad_k(small):
    model, X, y = small
    attr = inf.Attributor(model, (X, y), progress=False)
    with pytest.raises(inf.NotFittedError, match=r"call Attributor.fit\(\)"):
        attr.scores((X, y))
    attr.fit()
    for k in (0, -3, 2.5, True):
        with pytest.raises(inf.InvalidArgumentError, match="`k` must be a positive integer"):
            attr.top_k((X, y), k=k)


def test_non_finite_model_output_is_an_error_not_nan_scores(small):
    model, X, y = small
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(inf.InfluenceError, match="non-finite"):
        inf.Attributor(model, (X, y), progress=False).fit()


def test_exact_refuses_huge_models():
    model = torch.nn.Linear(200, 60)
    X, y = torch.randn(5, 200), torch.randint(0, 60, (5,))
    with pytest.raises(inf.InvalidArgumentError, match="above max_params=10000; use method='auto'"):
        inf.Attributor(model, (X, y), method="exact", progress=False).fit()


def test_an_index_too_large_for_memory_is_a_clear_error(logreg, monkeypatch):
    model, task, train, _ = logreg
    real_empty = torch.empty

    def failing_empty(*shape, **kwargs):
        if shape and shape[0] == len(train[1]):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
        return real_empty(*shape, **kwargs)

    monkeypatch.setattr(torch, "empty", failing_empty)
    attr = inf.Attributor(model, train, task=task, method="identity", progress=False)
    with pytest.raises(inf.InfluenceError, match="cache_dir=.*GiB|GiB.*cache_dir="):
        attr.fit()
