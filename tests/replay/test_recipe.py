"""The recipe's pure optimiser steps against torch.optim, and its data order and schedule."""

import math

import pytest
import torch

from influence.errors import InvalidArgumentError
from influence.replay import TrainingRecipe


@pytest.mark.parametrize(
    "recipe",
    [
        TrainingRecipe(optimizer="adam", lr=0.03, betas=(0.8, 0.99), eps=1e-6),
        TrainingRecipe(optimizer="sgd", lr=0.1, momentum=0.9),
        TrainingRecipe(optimizer="sgd", lr=0.1),
    ],
    ids=["adam", "sgd-momentum", "sgd"],
)
def test_pure_steps_match_torch_optim(recipe):
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(11, generator=gen, dtype=torch.float64) for _ in range(6)]
    start = torch.randn(11, generator=gen, dtype=torch.float64)
    param = start.clone().requires_grad_(True)
    opt = recipe.torch_optimizer([param])
    theta, state = start.clone(), recipe.init_state(start)
    for t, g in enumerate(grads):
        param.grad = g.clone()
        opt.step()
        theta, state = recipe.step(theta, state, g, recipe.lr, t + 1)
    torch.testing.assert_close(theta, param.detach(), rtol=1e-12, atol=1e-14)


def test_minibatch_order_is_seeded_and_covers_every_example_once_per_epoch():
    recipe = TrainingRecipe(epochs=3, batch_size=4, seed=7)
    batches = list(recipe.batches(10))
    assert len(batches) == recipe.steps(10) == 9
    for epoch in range(3):
        assert sorted(torch.cat(batches[3 * epoch : 3 * epoch + 3]).tolist()) == list(range(10))
    assert all(torch.equal(a, b) for a, b in zip(batches, recipe.batches(10)))
    other = TrainingRecipe(epochs=3, batch_size=4, seed=8).batches(10)
    assert not all(torch.equal(a, b) for a, b in zip(batches, other))


def test_cosine_schedule_decays_from_lr_towards_zero():
    recipe = TrainingRecipe(lr=0.5, epochs=10)
    assert recipe.lr_at(0, 10) == 0.5
    assert recipe.lr_at(5, 10) == pytest.approx(0.25)
    assert recipe.lr_at(9, 10) == pytest.approx(0.5 * 0.5 * (1 + math.cos(0.9 * math.pi)))
    assert TrainingRecipe(lr=0.5, schedule="constant").lr_at(9, 10) == 0.5


@pytest.mark.parametrize(
    "field,value",
    [
        ("optimizer", "rmsprop"),
        ("schedule", "step"),
        ("epochs", 0),
        ("batch_size", 0),
        ("lr", -1.0),
    ],
)
def test_bad_recipe_values_name_the_field(field, value):
    with pytest.raises(InvalidArgumentError, match=field):
        TrainingRecipe(**{field: value})
