"""The sign convention against actual leave-one-out retraining on a convex model."""

import torch

import influence as inf
from influence.validate import leave_one_out


def test_removing_top_helpful_raises_and_top_harmful_lowers_test_loss(logreg):
    model, task, train, test = logreg
    attr = inf.Attributor(model, train, task=task, method="exact", progress=False).fit()
    losses = task.loss(model(test[0]), test[1]).detach()
    j = int(losses.argmax())  # the worst test point
    one = (test[0][j:j + 1], test[1][j:j + 1])
    top = attr.top_k(one, k=1)
    helpful, harmful = int(top.helpful.indices[0, 0]), int(top.harmful.indices[0, 0])
    assert top.helpful.scores[0, 0] > 0 > top.harmful.scores[0, 0]
    result = leave_one_out(attr, one, [helpful, harmful], progress=False)
    assert result.actual[0, 0] > 0, "removing the most helpful example must raise the test loss"
    assert result.actual[0, 1] < 0, "removing the most harmful example must lower the test loss"
    # and the magnitude is score / n_train to first order
    assert torch.allclose(result.predicted, result.actual, rtol=0.25)  # first order, n = 120


def test_loo_correlation_on_convex_model(logreg):
    model, task, train, test = logreg
    attr = inf.Attributor(model, train, task=task, method="cg", progress=False).fit()
    scores = attr.scores(test)
    idx = scores.abs().argsort(dim=1, descending=True)[:, :8]
    result = leave_one_out(attr, test, idx, progress=False)
    assert result.pearson > 0.99 and result.spearman > 0.97


def test_self_influence_is_positive_and_matches_diagonal(logreg):
    model, task, train, _ = logreg
    attr = inf.Attributor(model, train, task=task, method="exact", progress=False).fit()
    si = attr.self_influence()
    full = attr.scores(train)
    assert si.shape == (len(train[1]),)
    assert torch.allclose(si, torch.diagonal(full), rtol=1e-10)
    assert (si > 0).all()
