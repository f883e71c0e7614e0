"""A tiny non-convex problem whose training the replay tests re-run: (initial model, data, task)."""

import torch

import influence as inf
from tests.conftest import make_blobs


def tiny_run(seed: int = 0):
    """MLP 4-6-3 (tanh), float64, 60 training blobs, 5 test blobs, L2 1e-2."""
    X, y = make_blobs(65, 4, 3, seed=seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)
    ).double()
    return model, (X[:60], y[:60]), (X[60:], y[60:]), inf.ClassificationTask(weight_decay=1e-2)


def measured(model, task, test) -> torch.Tensor:
    """Tensor[n_test]: the task's measurement (the loss) of `model` on `test`."""
    with torch.no_grad():
        return task.measurement(model(test[0]), test[1])
