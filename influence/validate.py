"""Ground truth for influence scores: exact leave-one-out retraining.

`leave_one_out(attr, test, train_indices)` removes each listed training example, retrains
the attributed parameters to convergence (warm-started from the full-data optimum, L-BFGS,
float64) and measures the actual change of each test measurement. The predicted change is
`score / n_train` (the package sign convention). Removing example i means dropping its
term from `(1/n) Σ loss + regulariser` with n unchanged — the perturbation that the
influence function linearises.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from scipy import stats
from torch import Tensor
from tqdm.auto import tqdm

from influence.attributor import Attributor
from influence.batching import to_model
from influence.errors import InvalidArgumentError
from influence.lds import lds  # noqa: F401  (re-export: influence.validate.lds)
from influence.model import FunctionalModel
from influence.training import minimize


@dataclass
class LOOResult:
    """Predicted vs actual change of the test measurement when one training example is removed.

    Attributes:
        train_indices: LongTensor[n_test, r], the removed examples per test row.
        predicted: Tensor[n_test, r], `score / n_train`.
        actual: Tensor[n_test, r], measurement(retrained) − measurement(full optimum).
        pearson, spearman: correlations over all pairs pooled.
    """

    train_indices: Tensor
    predicted: Tensor
    actual: Tensor
    pearson: float
    spearman: float


def correlations(predicted: Tensor, actual: Tensor) -> tuple[float, float]:
    """Pearson and Spearman correlation of two equally shaped tensors, pooled."""
    a, b = predicted.reshape(-1).double().cpu().numpy(), actual.reshape(-1).double().cpu().numpy()
    return float(stats.pearsonr(a, b)[0]), float(stats.spearmanr(a, b)[0])


def leave_one_out(attr: Attributor, test: Any, train_indices: Tensor | list, tol: float = 1e-10,
                  max_iter: int = 2000, progress: bool = True, retrain_cache: dict | None = None) -> LOOResult:
    """Retrain without each of `train_indices` and compare with the attributor's prediction.

    Args:
        attr: a fitted `Attributor` (its model, task, training data and scores are used).
        test: the test examples whose measurement is tracked (n_test of them).
        train_indices: LongTensor[n_test, r] (examples to remove for each test row) or a
            flat list of r indices used for every test row.
        tol, max_iter: L-BFGS convergence settings for each retrain.
        retrain_cache: optional dict reused across calls with the same model, task, data
            and test set (e.g. to compare methods): maps a removed index to the actual
            change of every test measurement, Tensor[n_test].
    """
    n = len(attr.train)
    idx = torch.as_tensor(train_indices, dtype=torch.long)
    test_data = attr.read_data(test)
    m = len(test_data)
    if idx.ndim == 1:
        idx = idx.expand(m, -1)
    if idx.ndim != 2 or idx.shape[0] != m:
        raise InvalidArgumentError(f"`train_indices` must be [n_test, r] or [r]; got shape {tuple(idx.shape)}")
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise InvalidArgumentError(f"`train_indices` must lie in [0, {n - 1}]")

    predicted = torch.gather(attr.scores(test).cpu(), 1, idx) / n

    model = copy.deepcopy(attr.model).double()
    fm = FunctionalModel(model, attr.task.parameters, forward=attr.task.forward)
    X, y = attr.train.batch(range(n))
    X = to_model(X, fm.device, fm.dtype)
    Xt, yt = test_data.batch(range(m))
    Xt = to_model(Xt, fm.device, fm.dtype)
    theta_full = minimize(fm, attr.task, X, y, fm.theta, tol=tol, max_iter=max_iter)

    def measure(theta: Tensor) -> Tensor:
        with torch.no_grad():
            return attr.task.measurement(fm(theta, Xt), yt)

    base = measure(theta_full)
    actual = torch.zeros(m, idx.shape[1], dtype=torch.float64)
    cache = {} if retrain_cache is None else retrain_cache
    todo = sorted(set(idx.reshape(-1).tolist()) - set(cache))
    for i in tqdm(todo, desc="leave-one-out retrains", disable=not progress):
        weights = torch.ones(n, dtype=torch.float64)
        weights[i] = 0.0
        cache[i] = measure(minimize(fm, attr.task, X, y, theta_full, weights, tol=tol, max_iter=max_iter)) - base
    for j in range(m):
        actual[j] = torch.stack([cache[i][j] for i in idx[j].tolist()])
    pearson, spearman = correlations(predicted, actual)
    return LOOResult(idx, predicted.double(), actual, pearson, spearman)
