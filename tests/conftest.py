"""Shared fixtures. TRITON_INTERPRET must be set before anything imports triton."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import influence as inf  # noqa: E402
from influence.model import FunctionalModel  # noqa: E402
from influence.training import load_flat, minimize  # noqa: E402


def make_blobs(n: int, d: int, classes: int, seed: int, dtype=torch.float64):
    """Linearly separable-ish Gaussian blobs: (X [n, d], y [n])."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=gen, dtype=dtype) * 2.0
    y = torch.randint(0, classes, (n,), generator=gen)
    X = centers[y] + torch.randn(n, d, generator=gen, dtype=dtype) * 1.5
    return X, y


def fit_to_optimum(model: torch.nn.Module, task: inf.Task, X, y) -> torch.nn.Module:
    """Train the attributed parameters of `model` to the optimum of the task objective."""
    fm = FunctionalModel(model, task.parameters)
    load_flat(model, fm, minimize(fm, task, X, y, fm.theta, tol=1e-12))
    return model


@pytest.fixture(scope="session")
def logreg():
    """A float64 multinomial logistic regression at its optimum, with data."""
    torch.manual_seed(0)
    X, y = make_blobs(120, 5, 3, seed=1)
    Xt, yt = make_blobs(12, 5, 3, seed=2)
    task = inf.ClassificationTask(weight_decay=0.05)
    model = fit_to_optimum(torch.nn.Linear(5, 3).double(), task, X, y)
    return model, task, (X, y), (Xt, yt)


@pytest.fixture(scope="session")
def mlp():
    """A small float64 tanh MLP trained to its optimum (non-convex), with data."""
    torch.manual_seed(0)
    X, y = make_blobs(90, 4, 3, seed=3)
    Xt, yt = make_blobs(10, 4, 3, seed=4)
    task = inf.ClassificationTask(weight_decay=0.01)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    fit_to_optimum(model, task, X, y)
    return model, task, (X, y), (Xt, yt)
