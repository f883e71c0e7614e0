"""`influence.validate.leave_one_out` against direct retraining from scratch."""

import torch

import influence as inf
from influence.model import FunctionalModel
from influence.training import minimize
from influence.validate import correlations, leave_one_out


def test_loo_actual_change_matches_scratch_retrain(logreg):
    model, task, (X, y), test = logreg
    attr = inf.Attributor(model, (X, y), task=task, method="exact", progress=False).fit()
    result = leave_one_out(attr, test, [3, 17], progress=False)
    # independent: retrain from zeros without example 17 (the objective keeps 1/n)
    fm = FunctionalModel(model)
    keep = torch.ones(len(y), dtype=torch.float64)
    keep[17] = 0
    full = minimize(fm, task, X, y, torch.zeros(fm.p, dtype=torch.float64), tol=1e-12)
    loo = minimize(fm, task, X, y, torch.zeros(fm.p, dtype=torch.float64), weights=keep, tol=1e-12)
    measure = lambda th: task.loss(fm(th, test[0]), test[1]).detach()
    assert torch.allclose(result.actual[:, 1], measure(loo) - measure(full), atol=1e-9)
    assert result.predicted.shape == result.actual.shape == (len(test[1]), 2)


def test_correlations():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert correlations(a, 2 * a + 1) == (1.0, 1.0)
    assert correlations(a, -a)[1] == -1.0
