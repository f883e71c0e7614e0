"""What breaks an exact replay is found and named before replaying."""

import pytest
import torch

from influence.errors import NonDeterministicError
from influence.replay import Replay, TrainingRecipe
from influence.replay.determinism import problems
from tests.replay._problem import tiny_run


def test_a_plain_mlp_on_tensors_has_no_problems():
    initial, train, _, _ = tiny_run()
    assert problems(initial, train, torch.device("cpu")) == []


@pytest.mark.parametrize(
    "layer,named",
    [(torch.nn.Dropout(0.1), "dropout `1`"), (torch.nn.BatchNorm1d(6), "batch norm `1`")],
)
def test_dropout_and_batch_norm_are_named(layer, named):
    _, train, _, task = tiny_run()
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), layer, torch.nn.Linear(6, 3)).double()
    with pytest.raises(NonDeterministicError, match=named):
        Replay(model, train, TrainingRecipe(epochs=2), task).fit()


def test_dropout_with_p_zero_is_fine():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Dropout(0.0), torch.nn.Linear(6, 3))
    assert problems(model, None, torch.device("cpu")) == []


def test_a_data_loader_with_workers_is_named():
    initial, (X, y), _, _ = tiny_run()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=4, num_workers=2
    )
    found = problems(initial, loader, torch.device("cpu"))
    assert len(found) == 1 and "DataLoader with num_workers=2" in found[0]


def test_cuda_without_deterministic_algorithms_is_named(monkeypatch):
    initial, train, _, _ = tiny_run()
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: False)
    assert any("non-deterministic" in p for p in problems(initial, train, torch.device("cuda")))
