"""Newton-step group harm against actually retraining without the group."""

import numpy as np
import torch

import influence as inf
from influence.data import as_data
from influence.model import FunctionalModel
from influence.report.group_influence import newton_group_scores
from influence.training import load_flat, minimize

from tests.conftest import make_blobs


def test_newton_group_removal_matches_retraining_where_the_first_order_sum_fails():
    task = inf.ClassificationTask(weight_decay=0.05)
    X, y = make_blobs(400, 4, 3, seed=0)
    Xt, yt = make_blobs(30, 4, 3, seed=1)
    X, Xt = X / 3, Xt / 3
    codes = np.repeat(np.arange(8), 50)
    X[codes == 2, 0] = 5.0  # a coherent group: one feature pinned to an extreme value
    model = torch.nn.Linear(4, 3).double()
    fm = FunctionalModel(model)
    load_flat(model, fm, minimize(fm, task, X, y, fm.theta, tol=1e-12))
    newton = newton_group_scores(model, task, as_data((X, y), "train"), codes, 8, (Xt, yt), damping=0.0).sum(0)
    attr = inf.Attributor(model, (X, y), task=task, method="exact", damping=0.0, progress=False).fit()
    first = attr.group_scores((Xt, yt), codes.tolist()).sum.numpy().sum(0)
    base = task.loss(model(Xt), yt).detach()
    for g in range(8):
        # removal as in the influence formula: weight 0 on the group, normalisation 1/n kept;
        # score units: n × (change of the summed test loss)
        theta = minimize(fm, task, X, y, fm.theta, weights=torch.tensor(codes != g, dtype=torch.float64), tol=1e-10)
        actual = (task.loss(fm(theta, Xt), yt) - base).sum().item() * len(y)
        assert np.sign(newton[g]) == np.sign(actual)
        assert abs(newton[g] - actual) <= 0.35 * abs(actual), (g, newton[g], actual, first[g])
        if g == 2:  # the pinned group: the summed first-order scores miss most of its effect
            assert abs(first[g] - actual) > 0.5 * abs(actual)
