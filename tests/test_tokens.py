"""`influence.token_scores`: a training document's score split over the tokens it predicts,
against a dense float64 Hessian solve with one autograd gradient per token."""

import pytest
import torch

import influence as inf
from influence.model import FunctionalModel
from tests.test_language_modeling import TinyGPT, documents, loop_loss


def test_token_scores_equal_a_dense_solve_per_token_and_sum_to_the_document_score():
    model = TinyGPT(dim=4, heads=1, layers=1)
    task = inf.LanguageModelingTask(weight_decay=0.1, parameters=["head", "blocks.0.linear2"])
    ids, mask = documents(10, seed=11)
    train = {"input_ids": ids, "labels": inf.token_labels(ids, mask)}
    test_ids, test_mask = documents(2, seed=12)
    test = {"input_ids": test_ids, "labels": inf.token_labels(test_ids, test_mask, prompt_length=2)}
    damping = 2.0
    attr = inf.Attributor(model, train, task=task, method="exact", curvature="hessian",
                          damping=damping, label_column="labels", progress=False).fit()
    rows = [3, 7]
    got = inf.token_scores(attr, test, rows)
    assert got.shape == (2, 2, ids.shape[1])
    torch.testing.assert_close(got.sum(-1), attr.scores(test)[:, rows], rtol=1e-9, atol=1e-11)

    fm = FunctionalModel(model, task.parameters, forward=task.forward)

    def loss(theta, row_ids, row_mask, only=None, prompt=0):
        params = {n: t.view(s) for n, t, s in zip(fm.names, theta.split(fm.numels), fm.shapes)}
        logits = torch.func.functional_call(model, params, (row_ids[None],))[0]
        if only is None:
            return loop_loss(logits, row_ids, row_mask, prompt)
        return -torch.log_softmax(logits[only - 1], -1)[row_ids[only]]

    H = torch.autograd.functional.hessian(
        lambda th: torch.stack([loss(th, ids[i], mask[i]) for i in range(len(ids))]).mean(),
        fm.theta)
    H = H + (0.1 + damping) * torch.eye(fm.p, dtype=H.dtype)
    test_grads = torch.stack([torch.autograd.functional.jacobian(
        lambda th: loss(th, test_ids[j], test_mask[j], prompt=2), fm.theta) for j in range(2)])
    for r, i in enumerate(rows):
        for t in range(ids.shape[1]):
            if t == 0 or not mask[i, t]:
                assert (got[:, r, t] == 0).all()
                continue
            g = torch.autograd.functional.jacobian(lambda th: loss(th, ids[i], mask[i], only=t),
                                                   fm.theta)
            expected = test_grads @ torch.linalg.solve(H, g)
            torch.testing.assert_close(got[:, r, t], expected, rtol=1e-7, atol=1e-9)


def test_token_scores_check_their_arguments():
    X, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    attr = inf.Attributor(torch.nn.Linear(3, 2), (X, y), method="identity", progress=False)
    with pytest.raises(inf.NotFittedError):
        inf.token_scores(attr, (X[:1], y[:1]), [0])
    attr.fit()
    with pytest.raises(inf.InvalidArgumentError, match=r"`rows` must be indices"):
        inf.token_scores(attr, (X[:1], y[:1]), [6])
    with pytest.raises(inf.InvalidArgumentError, match="per-token targets"):
        inf.token_scores(attr, (X[:1], y[:1]), [0])
