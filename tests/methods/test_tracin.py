"""`method="tracin"` (TracIn-CP) against explicit per-checkpoint gradient dot products."""

import copy

import pytest
import torch

import influence as inf
from tests.methods._reference import per_example_grads


def test_weighted_sum_over_checkpoints(mlp):
    model, task, train, test = mlp
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.3 * torch.randn_like(p))
    expected = sum(w * per_example_grads(m, task.loss, *test) @ per_example_grads(m, task.loss, *train).T
                   for w, m in ((0.2, model), (0.05, other)))
    attr = inf.Attributor(model, train, task=task, method="tracin", checkpoints=[model.state_dict(),
                          other.state_dict()], weights=[0.2, 0.05], progress=False).fit()
    assert torch.allclose(attr.scores(test), expected, rtol=1e-10)


def test_without_checkpoints_equals_identity(logreg):
    model, task, train, test = logreg
    got = inf.Attributor(model, train, task=task, method="tracin", progress=False).fit().scores(test)
    expected = inf.Attributor(model, train, task=task, method="identity", progress=False).fit().scores(test)
    assert torch.allclose(got, expected, rtol=1e-12)


def test_checkpoint_errors_name_the_argument(logreg, mlp):
    model, task, train, _ = logreg
    with pytest.raises(inf.InvalidArgumentError, match="`weights` has 1 entries but there are 2"):
        inf.Attributor(model, train, task=task, method="tracin", checkpoints=[model.state_dict()] * 2, weights=[1.0])
    with pytest.raises(inf.InvalidArgumentError, match="`checkpoints`"):
        inf.Attributor(model, train, task=task, method="tracin", checkpoints=[])
    wrong = mlp[0].state_dict()
    attr = inf.Attributor(model, train, task=task, method="tracin", checkpoints=[wrong], progress=False)
    with pytest.raises(inf.InvalidArgumentError, match=r"`checkpoints\[0\]` does not fit the model"):
        attr.fit()


@pytest.mark.parametrize("method", ["identity", "tracin"])
def test_an_orthogonal_projection_wider_than_p_is_an_argument_error(logreg, method):
    """The projecting methods share one projection: each refuses an orthogonal k > p the same way."""
    model, task, train, _ = logreg
    attr = inf.Attributor(model, train, task=task, method=method, projection="orthogonal", projection_dim=100,
                          progress=False)
    with pytest.raises(inf.InvalidArgumentError, match="projection_dim <= p = 18"):
        attr.fit()
