"""`influence.batching` (inputs as pytrees) and models called through `Task.forward`."""

import pytest
import torch

from influence.batching import (
    concat,
    describe,
    from_state,
    is_finite,
    leaves,
    num_rows,
    take,
    to_model,
    to_state,
)
from influence.gradients import per_example_grads
from influence.model import FunctionalModel, eval_mode
from influence.task import ClassificationTask


class TwoInputs(torch.nn.Module):
    """logits = W·(emb(ids) · mask).mean + V·x: a dict-input model (`model(**inputs)`)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 4, dtype=torch.float64)
        self.head = torch.nn.Linear(4 + 3, 2, dtype=torch.float64)

    def forward(self, ids, mask, x):
        pooled = (self.emb(ids) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return self.head(torch.cat([pooled, x], dim=1))


def batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"ids": torch.randint(0, 11, (n, 6), generator=g), "mask": torch.ones(n, 6, dtype=torch.float64),
            "x": torch.randn(n, 3, generator=g, dtype=torch.float64)}


def test_take_concat_and_state_round_trip_every_form():
    t = torch.arange(12.0).reshape(6, 2)
    for inputs in (t, {"a": t, "b": t.long()}, (t, t * 2)):
        assert num_rows(inputs) == 6
        joined = concat([take(inputs, slice(0, 2)), take(inputs, [2, 3, 4, 5])])
        restored = from_state(to_state(joined, "inputs"), "inputs")
        for got in (joined, restored):
            assert type(got) is type(inputs)
            assert all(torch.equal(a, b) for a, b in zip(leaves(got), leaves(inputs), strict=True))


def test_to_model_casts_floats_only_and_is_finite_flags_rows():
    inputs = {"ids": torch.tensor([[1, 2], [3, 4]]), "x": torch.tensor([[1.0], [float("nan")]])}
    moved = to_model(inputs, torch.device("cpu"), torch.float64)
    assert moved["ids"].dtype == torch.int64 and moved["x"].dtype == torch.float64
    assert is_finite(inputs).tolist() == [True, False]
    assert "ids: Tensor[2, 2] int64" in describe(inputs)
    with pytest.raises(ValueError, match="leading example dimension"):
        num_rows({"a": torch.zeros(2, 3), "b": torch.zeros(3)})


def test_dict_inputs_give_the_brute_force_per_example_gradients():
    torch.manual_seed(0)
    model, task = TwoInputs(), ClassificationTask()
    inputs, y = batch(), torch.tensor([0, 1, 1, 0, 1])
    fm = FunctionalModel(model, None, forward=task.forward)
    G = per_example_grads(fm, task.loss, inputs, y)
    for i in range(5):
        model.zero_grad()
        one = {k: v[i:i + 1] for k, v in inputs.items()}
        task.loss(model(**one), y[i:i + 1]).sum().backward()
        expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(G[i], expected, rtol=1e-12, atol=1e-12)


def test_calls_run_in_eval_mode_and_restore_each_submodule():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.9), torch.nn.Linear(3, 2))
    model.train()
    model[2].eval()  # a partly frozen model stays partly frozen
    fm = FunctionalModel(model)
    x = torch.randn(4, 3)
    assert torch.equal(fm(fm.theta, x), fm(fm.theta, x))  # dropout off
    assert model.training and model[1].training and not model[2].training
    with eval_mode(model):
        assert not model[1].training
    assert model[1].training and not model[2].training
