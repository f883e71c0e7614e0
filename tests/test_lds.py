"""`influence.lds`: the Linear Datamodeling Score, its sign, and its on-disk ground-truth cache."""

import copy

import numpy as np
import pytest
import torch
from scipy import stats

import influence as inf
from influence.lds import lds
from influence.model import FunctionalModel
from influence.training import load_flat, minimize


def make_retrain(model, task, X, y, calls):
    def retrain(rows, seed):
        calls.append((tuple(rows.tolist()), seed))
        fresh = copy.deepcopy(model)
        fm = FunctionalModel(fresh)
        load_flat(fresh, fm, minimize(fm, task, X[rows], y[rows], torch.zeros_like(fm.theta), tol=1e-10))
        return fresh
    return retrain


@pytest.fixture(scope="module")
def setting(logreg):
    model, task, (X, y), test = logreg
    attr = inf.Attributor(model, (X, y), task=task, method="exact", progress=False).fit()
    return attr, test, model, task, X, y


def test_exact_influence_predicts_retrained_convex_models(setting, tmp_path):
    attr, test, model, task, X, y = setting
    calls = []
    result = lds(attr, test, subsets=20, retrain=make_retrain(model, task, X, y, calls), cache_dir=tmp_path,
                 repeats=2, progress=False)
    assert result.score > 0.8, result.per_test
    assert result.ceiling == 1.0  # the retrain ignores its seed
    assert len(calls) == 40 and {s for _, s in calls} == {0, 1}
    assert all(len(rows) == 60 for rows, _ in calls)
    # independent recomputation of the statistic and of its sign
    scores = attr.scores(test)
    predicted = -(result.masks.double() @ scores.T)
    assert torch.allclose(result.predicted, predicted)
    rho = [stats.spearmanr(predicted[:, j], result.actual.mean(0)[:, j])[0] for j in range(len(test[1]))]
    assert result.score == pytest.approx(np.mean(rho))
    flipped = lds(attr, test, subsets=20, cache_dir=tmp_path, repeats=2, scores=-scores, progress=False)
    assert flipped.score == pytest.approx(-result.score)


def test_cache_is_reused_resumed_and_keyed(setting, tmp_path):
    attr, test, model, task, X, y = setting
    calls = []
    retrain = make_retrain(model, task, X, y, calls)

    def crashing(rows, seed):
        if len(calls) == 4:
            raise KeyboardInterrupt
        return retrain(rows, seed)

    with pytest.raises(KeyboardInterrupt):
        lds(attr, test, subsets=10, retrain=crashing, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("lds-*.npz"))) == 1
    first = lds(attr, test, subsets=10, retrain=retrain, cache_dir=tmp_path, progress=False)
    assert len(calls) == 10, "the 4 saved subsets must not be retrained again"
    again = lds(attr, test, subsets=10, cache_dir=tmp_path, progress=False)  # no retrain needed
    assert torch.equal(again.actual, first.actual) and len(calls) == 10
    lds(attr, test, subsets=10, retrain=retrain, cache_dir=tmp_path, key="another recipe", progress=False)
    assert len(calls) == 20 and len(list(tmp_path.glob("lds-*.npz"))) == 2


def test_errors_name_the_argument(setting, tmp_path):
    attr, test, *_ = setting
    with pytest.raises(inf.InvalidArgumentError, match="`retrain` is required"):
        lds(attr, test, subsets=5, cache_dir=tmp_path, progress=False)
    with pytest.raises(inf.InvalidArgumentError, match="`subsets`"):
        lds(attr, test, subsets=1, retrain=lambda rows, seed: None, progress=False)
    with pytest.raises(inf.InvalidArgumentError, match="`fraction`"):
        lds(attr, test, fraction=1.5, retrain=lambda rows, seed: None, progress=False)
