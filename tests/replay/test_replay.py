"""Replay's metagradients against independent references: finite differences and leave-one-out
retraining through `TrainingRecipe.train` (torch.optim, autograd), never replay's own forward."""

import copy

import pytest
import torch

from influence.errors import InvalidArgumentError, NonDeterministicError, NotFittedError
from influence.replay import Replay, TrainingRecipe
from tests.replay._problem import measured, tiny_run

ADAM = TrainingRecipe(optimizer="adam", lr=0.02, epochs=60)
SGD = TrainingRecipe(optimizer="sgd", lr=0.2, momentum=0.9, epochs=4, batch_size=16, seed=3)


def retrained(recipe, weights=None):
    """Test losses [n_test] after training by `recipe` with example weights (torch.optim)."""
    initial, train, test, task = tiny_run()
    return measured(recipe.train(copy.deepcopy(initial), *train, task, weights=weights), task, test)


def replay_scores(recipe, **options):
    initial, train, test, task = tiny_run()
    trained = recipe.train(copy.deepcopy(initial), *train, task)
    replay = Replay(initial, train, recipe, task, trained=trained, **options).fit()
    return replay, replay.scores(test)


@pytest.mark.parametrize("recipe", [ADAM, SGD], ids=["full-batch adam", "minibatch sgd momentum"])
def test_scores_are_the_derivative_of_the_test_loss_wrt_example_weights(recipe):
    _, scores = replay_scores(recipe, checkpoint_every=7)
    n, h = scores.shape[1], 1e-5
    for i in (0, 13, 59):
        up, down = torch.ones(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
        up[i], down[i] = 1 + h, 1 - h
        derivative = (retrained(recipe, up) - retrained(recipe, down)) / (2 * h)
        torch.testing.assert_close(scores[:, i], -n * derivative, rtol=1e-5, atol=1e-7)


def test_sign_and_size_match_leave_one_out_retraining_with_the_same_seed():
    replay, scores = replay_scores(ADAM)
    n = scores.shape[1]
    full = retrained(ADAM)
    actual = torch.stack(
        [
            retrained(
                ADAM, torch.ones(n, dtype=torch.float64).index_fill(0, torch.tensor([i]), 0.0)
            )
            - full
            for i in range(n)
        ],
        dim=1,
    )  # [n_test, n_train]: change of the test loss
    predicted = scores / n  # the convention: removing train_i changes the loss by +score / n
    big = actual.abs() > 0.2 * actual.abs().max()  # the removals that move a test loss most
    assert big.sum() >= 10
    assert (torch.sign(predicted[big]) == torch.sign(actual[big])).all()
    # first order in a 1/60 removal through 60 Adam steps: measured 0.97 here
    corr = torch.corrcoef(torch.stack([predicted.flatten(), actual.flatten()]))[0, 1]
    assert corr > 0.9, corr
    assert replay.diagnostics["reproduction_error"] < 1e-10


def test_checkpoints_on_disk_give_the_same_scores(tmp_path):
    _, in_memory = replay_scores(ADAM, checkpoint_every=6)
    replay, on_disk = replay_scores(ADAM, checkpoint_every=9, checkpoint_dir=tmp_path)
    assert len(list(tmp_path.glob("step-*.safetensors"))) == replay.diagnostics["checkpoints"] == 7
    torch.testing.assert_close(on_disk, in_memory, rtol=1e-9, atol=1e-12)


def test_a_model_trained_by_another_recipe_is_refused():
    initial, train, _, task = tiny_run()
    other = TrainingRecipe(optimizer="adam", lr=0.03, epochs=60).train(
        copy.deepcopy(initial), *train, task
    )
    with pytest.raises(NonDeterministicError, match="does not reproduce `trained`"):
        Replay(initial, train, ADAM, task, trained=other).fit()


def test_bad_arguments_and_order_raise_our_errors():
    initial, train, test, task = tiny_run()
    with pytest.raises(InvalidArgumentError, match="recipe"):
        Replay(initial, train, {"lr": 0.1}, task)
    with pytest.raises(InvalidArgumentError, match="checkpoint_every"):
        Replay(initial, train, ADAM, task, checkpoint_every=0)
    with pytest.raises(NotFittedError, match="fit"):
        Replay(initial, train, ADAM, task).scores(test)


def test_the_demos_train_adam_is_replayable():
    from influence.demos.training import adam_recipe, train_adam

    initial, train, _, task = tiny_run()
    trained = train_adam(copy.deepcopy(initial), *train, task, epochs=30, lr=0.02)
    replay = Replay(initial, train, adam_recipe(epochs=30, lr=0.02), task, trained=trained).fit()
    assert replay.diagnostics["reproduction_error"] < 1e-10


def test_weights_replay_training_on_a_subset():
    initial, (X, y), _, task = tiny_run()
    keep = torch.arange(60) % 3 != 0
    on_subset = ADAM.train(
        copy.deepcopy(initial), X[keep], y[keep], task
    )  # torch.optim on 40 examples
    weights = keep.to(torch.float64) / keep.to(torch.float64).mean()
    replay = Replay(initial, (X, y), ADAM, task, trained=on_subset, weights=weights).fit()
    assert replay.diagnostics["reproduction_error"] < 1e-10
    with pytest.raises(InvalidArgumentError, match="weights"):
        Replay(initial, (X, y), ADAM, task, weights=torch.ones(59)).fit()


@pytest.mark.parametrize("recipe", [ADAM, SGD], ids=["full-batch adam", "minibatch sgd momentum"])
def test_parameter_change_is_the_derivative_of_the_trained_parameters(recipe):
    from influence.model import FunctionalModel

    initial, train, _, task = tiny_run()
    replay = Replay(initial, train, recipe, task).fit()
    delta = torch.linspace(-1, 1, 60, dtype=torch.float64)
    h = 1e-5
    trained = [
        FunctionalModel(
            recipe.train(copy.deepcopy(initial), *train, task, weights=1 + s * h * delta)
        ).theta
        for s in (1, -1)
    ]
    torch.testing.assert_close(
        replay.parameter_change(delta), (trained[0] - trained[1]) / (2 * h), rtol=1e-5, atol=1e-8
    )


def test_subset_linearity_is_the_cosine_of_predicted_and_retrained_parameter_changes():
    from influence.lds import subset_masks
    from influence.model import FunctionalModel

    initial, (X, y), _, task = tiny_run()
    replay = Replay(initial, (X, y), ADAM, task).fit()
    keep = subset_masks(60, 1, 0.5, 3)[0]
    on_subset = ADAM.train(copy.deepcopy(initial), X[keep], y[keep], task)  # torch.optim, 30 rows
    actual = FunctionalModel(on_subset).theta - replay.final
    predicted = replay.parameter_change(keep.to(torch.float64) * 2 - 1)
    expected = torch.nn.functional.cosine_similarity(actual, predicted, dim=0)
    assert replay.subset_linearity(0.5, seed=3) == pytest.approx(float(expected), abs=1e-8)
