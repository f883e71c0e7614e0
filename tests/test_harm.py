"""`influence.harm`: the one definition of harm, against actually retraining a tiny model.

The reference is retraining with L-BFGS to ‖∇‖∞ ≤ 1e-10 (`influence.training.minimize`) with the
removed examples weighted 0 and the 1/n normalisation kept (the influence convention), never the
code's own earlier output.
"""

import numpy as np
import pytest
import torch

import influence as inf
from influence.harm import GroupHarm, example_harm, group_harm
from influence.newton import estimated_metrics
from influence.model import FunctionalModel
from influence.training import minimize
from tests.conftest import make_blobs

TASK = inf.ClassificationTask(weight_decay=0.05)


@pytest.fixture(scope="module")
def pinned():
    """Logistic regression on 400 blobs in 8 groups of 50; group 2 has one feature pinned to an
    extreme value (a coherent, curvature-dominating group), group 5 has its labels shifted."""
    X, y = make_blobs(400, 4, 3, seed=0)
    Xt, yt = make_blobs(40, 4, 3, seed=1)
    X, Xt = X / 3, Xt / 3
    codes = np.repeat(np.arange(8), 50)
    X[codes == 2, 0] = 5.0
    y[codes == 5] = (y[codes == 5] + 1) % 3
    model = torch.nn.Linear(4, 3).double()
    fm = FunctionalModel(model)
    theta = minimize(fm, TASK, X, y, fm.theta, tol=1e-12)
    with torch.no_grad():
        model.weight.copy_(theta[:12].view(3, 4))
        model.bias.copy_(theta[12:])
    attr = inf.Attributor(model, (X, y), task=TASK, method="exact", damping=0.0, progress=False).fit()
    return model, attr, (X, y), (Xt, yt), codes


def retrained_losses(model, X, y, Xt, yt, weights):
    fm = FunctionalModel(model)
    theta = minimize(fm, TASK, X, y, fm.theta, weights=weights, tol=1e-10)
    return fm, theta, TASK.loss(fm(theta, Xt), yt).detach()


def test_example_harm_is_the_leave_one_out_loss_drop(pinned):
    model, attr, (X, y), (Xt, yt), _ = pinned
    harm = example_harm(attr.scores((Xt, yt)), len(y))
    base = TASK.loss(model(Xt), yt).detach().sum().item()
    for i in np.argsort(-np.abs(harm))[:5]:
        weights = torch.ones(len(y), dtype=torch.float64)
        weights[i] = 0
        actual = base - retrained_losses(model, X, y, Xt, yt, weights)[2].sum().item()  # drop of the summed loss
        assert np.sign(harm[i]) == np.sign(actual)
        assert harm[i] == pytest.approx(actual, rel=0.05)


def test_group_removal_harm_matches_retraining_where_the_first_order_sum_fails(pinned):
    model, attr, (X, y), (Xt, yt), codes = pinned
    result = group_harm(attr, (Xt, yt), codes.tolist(), estimator="newton", train=(X, y))
    assert isinstance(result, GroupHarm) and result.estimator == "newton" and result.values == list(range(8))
    base = TASK.loss(model(Xt), yt).detach().sum().item()
    actual = [base - retrained_losses(model, X, y, Xt, yt, torch.tensor(codes != g, dtype=torch.float64))[2].sum()
              .item() for g in range(8)]
    for g in range(8):
        assert np.sign(result.harm[g]) == np.sign(actual[g]), g
        assert abs(result.harm[g] - actual[g]) <= 0.35 * abs(actual[g]), (g, result.harm[g], actual[g])
    # the pinned group: its members' first-order sum misses most of its effect
    assert abs(result.first_order_harm[2] - actual[2]) > 0.5 * abs(actual[2])
    assert np.argmax(result.harm) == np.argmax(actual) == 2


def test_first_order_group_harm_is_the_sum_of_example_harm(pinned):
    _, attr, (X, y), (Xt, yt), codes = pinned
    scores = attr.scores((Xt, yt))
    by_scores = group_harm(attr, (Xt, yt), codes.tolist(), scores=scores, estimator="first_order")
    by_index = group_harm(attr, (Xt, yt), [f"g{c}" for c in codes], estimator="first_order")
    harm = example_harm(scores, len(y))
    expected = [harm[codes == g].sum() for g in range(8)]
    np.testing.assert_allclose(by_scores.harm, expected, rtol=1e-10)
    np.testing.assert_allclose(by_index.harm, expected, rtol=1e-6)
    assert by_index.values == [f"g{g}" for g in range(8)] and by_index.newton is None
    assert by_scores.count.tolist() == [50] * 8


def test_estimated_metrics_match_retraining_without_or_with_corrected_labels(pinned):
    model, attr, (X, y), (Xt, yt), codes = pinned
    rows = np.flatnonzero(codes == 5)
    without = estimated_metrics(attr, (Xt, yt), remove=rows, train=(X, y))
    fm, theta, losses = retrained_losses(model, X, y, Xt, yt, torch.tensor(codes != 5, dtype=torch.float64))
    assert without.mean_loss == pytest.approx(losses.mean().item(), rel=0.05)
    truth = (y[rows] - 1) % 3  # the labels before the shift
    fixed = estimated_metrics(attr, (Xt, yt), relabel=dict(zip(rows.tolist(), truth.tolist())), train=(X, y))
    y_fixed = y.clone()
    y_fixed[rows] = truth
    theta = minimize(fm, TASK, X, y_fixed, fm.theta, tol=1e-10)
    out = fm(theta, Xt)
    assert fixed.mean_loss == pytest.approx(TASK.loss(out, yt).mean().item(), rel=0.1)
    assert fixed.accuracy == pytest.approx((out.argmax(1) == yt).double().mean().item(), abs=0.051)
    unchanged = estimated_metrics(attr, (Xt, yt), train=(X, y))
    assert unchanged.mean_loss == pytest.approx(TASK.loss(model(Xt), yt).mean().item(), rel=1e-9)


def test_bad_arguments_are_named(pinned):
    _, attr, (X, y), (Xt, yt), codes = pinned
    with pytest.raises(inf.InvalidArgumentError, match="`labels` has 3 entries"):
        group_harm(attr, (Xt, yt), [0, 1, 2])
    with pytest.raises(inf.InvalidArgumentError, match="`estimator`"):
        group_harm(attr, (Xt, yt), codes.tolist(), estimator="magic")
    with pytest.raises(inf.InvalidArgumentError, match="out of range"):
        estimated_metrics(attr, (Xt, yt), remove=[400], train=(X, y))
    with pytest.raises(inf.InvalidArgumentError, match="shape"):
        example_harm(np.zeros((2, 5)), len(y))
    identity = inf.Attributor(attr.model, (X, y), task=TASK, method="identity", progress=False).fit()
    with pytest.raises(inf.InvalidArgumentError, match="first-order"):
        group_harm(identity, (Xt, yt), codes.tolist(), estimator="newton")
    assert group_harm(identity, (Xt, yt), codes.tolist()).estimator == "first_order"  # auto falls back
