"""The Linear Datamodeling Score (LDS; Park et al. 2023): do scores predict retrained models?

Draw `subsets` random subsets S_s of the training set (each a fraction `fraction`, 50% by
default), retrain a model on each, and record the test measurement m_j(θ_S) (the task's
`measurement`: the loss by default, a margin for a margin task). An attribution predicts

    m_j(θ_S) ≈ const − Σ_{i ∈ S} score[j, i] / n_train

(package sign convention: removing train_i changes m_j by +score / n, so *including* it
changes m_j by −score / n). LDS_j is the Spearman correlation over subsets between
`predicted[s, j] = −Σ_{i ∈ S_s} score[j, i]` and the actual m_j, and LDS is its mean over
test points. The retrained ground truth is costly and is cached on disk, keyed by every
setting it depends on, and saved after each subset, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn
from tqdm.auto import tqdm

from influence.batching import to_model
from influence.errors import InvalidArgumentError
from influence.model import eval_mode
from influence.storage import atomic_write


@dataclass
class LDSResult:
    """Linear datamodeling scores of one attribution against retrained models.

    Attributes:
        score: LDS, the mean over test points of the Spearman correlation between
            predicted and actual measurements (actual = mean over the `repeats` retrains).
        per_test: Tensor[n_test], Spearman correlation per test point (NaN where either
            side is constant over subsets; such points are left out of the mean).
        score_single: LDS against the first retrain of each subset only.
        ceiling: with repeats >= 2, the same statistic between the first and second
            retrain of each subset — how well one retrain predicts another (seed noise);
            no attribution can beat it against single-retrain ground truth. Else None.
        predicted: Tensor[subsets, n_test], −Σ_{i ∈ S_s} score[j, i].
        actual: Tensor[repeats, subsets, n_test], measured on the retrained models.
        masks: BoolTensor[subsets, n_train], membership of each subset.
    """

    score: float
    per_test: Tensor
    score_single: float
    ceiling: float | None
    predicted: Tensor
    actual: Tensor
    masks: Tensor


def lds(attributor: Any, test: Any, subsets: int = 100, retrain: Callable[[Tensor, int], nn.Module] | None = None,
        cache_dir: str | Path | None = None, fraction: float = 0.5, seed: int = 0, repeats: int = 1,
        key: str = "", scores: Tensor | None = None, progress: bool = True) -> LDSResult:
    """Linear Datamodeling Score of a fitted `Attributor` on `test`.

    Args:
        attributor: a fitted `influence.Attributor` (its scores, task measurement and
            training-set size are used).
        test: test examples, any form `Attributor.scores` accepts (n_test of them).
        subsets: number of random training subsets.
        retrain: `retrain(subset_indices: LongTensor[k], seed: int) -> nn.Module`, a
            deterministic function that trains a fresh model on those training examples;
            called with seed = 0 .. repeats-1 for each subset.
        cache_dir: folder for the retrained ground truth (`lds-<key>.npz`); None keeps it
            in memory only. The file name is a digest of every setting the ground truth
            depends on: n_train, the test data, subsets, fraction, seed, repeats, the
            measurement, the attributor model's fingerprint and `key`.
        fraction: size of each subset as a fraction of the training set.
        seed: seed of the subset draw.
        repeats: retrains per subset (2 gives the seed-noise `ceiling`).
        key: a free-form description of the `retrain` recipe (epochs, optimiser, ...), so
            that changing the recipe does not reuse stale ground truth.
        scores: precomputed `attributor.scores(test)`, Tensor[n_test, n_train] (optional).
    Returns:
        `LDSResult`.
    """
    n = attributor.index.n if getattr(attributor, "index", None) is not None else len(attributor.train)
    data = attributor.read_data(test)
    m = len(data)
    _check_settings(subsets, fraction, repeats, retrain)
    X, y = data.batch(range(m))
    settings = {"n_train": n, "test": _digest(X, y), "subsets": subsets, "fraction": fraction, "seed": seed,
                "repeats": repeats, "measurement": f"{type(attributor.task).__module__}."
                f"{type(attributor.task).__qualname__}", "model": attributor.fm.fingerprint(), "key": key}
    masks = subset_masks(n, subsets, fraction, seed)
    actual = ground_truth(masks, repeats, retrain, lambda model: _measure(model, attributor.task, X, y), settings,
                          cache_dir, progress)
    if scores is None:
        scores = attributor.scores(test)
    if scores.shape != (m, n):
        raise InvalidArgumentError(f"`scores` must have shape {(m, n)} (n_test, n_train), got {tuple(scores.shape)}")
    predicted = -(masks.to(torch.float64) @ scores.detach().cpu().to(torch.float64).T)
    per_test = spearman_per_column(predicted, actual.mean(0))
    single = spearman_per_column(predicted, actual[0])
    ceiling = float(np.nanmean(spearman_per_column(actual[0], actual[1]).numpy())) if repeats >= 2 else None
    return LDSResult(float(np.nanmean(per_test.numpy())), per_test, float(np.nanmean(single.numpy())), ceiling,
                     predicted, actual, masks)


def subset_masks(n: int, subsets: int, fraction: float, seed: int) -> Tensor:
    """BoolTensor[subsets, n]: each row keeps round(fraction·n) examples drawn without replacement."""
    gen = torch.Generator().manual_seed(seed)
    k = max(1, round(fraction * n))
    masks = torch.zeros(subsets, n, dtype=torch.bool)
    for s in range(subsets):
        masks[s, torch.randperm(n, generator=gen)[:k]] = True
    return masks


def ground_truth(masks: Tensor, repeats: int, retrain: Callable | None, measure: Callable[[nn.Module], Tensor],
                 settings: dict, cache_dir: str | Path | None, progress: bool = True) -> Tensor:
    """Tensor[repeats, subsets, n_test]: the measurement of each retrained model.

    Loaded from `cache_dir` when present; otherwise computed, saving after each subset
    (atomically), and resumed from the saved subsets after an interruption.
    """
    subsets = masks.shape[0]
    path = None if cache_dir is None else Path(cache_dir) / f"lds-{_key_digest(settings)}.npz"
    actual, done = None, np.zeros(subsets, dtype=bool)
    if path is not None and path.exists():
        with np.load(path) as stored:
            if json.loads(str(stored["settings"])) != settings or not np.array_equal(stored["masks"], masks.numpy()):
                raise InvalidArgumentError(f"{path} holds ground truth for other settings; delete it or change `key`")
            actual, done = stored["actual"], stored["done"]
    todo = [s for s in range(subsets) if not done[s]]
    if todo and retrain is None:
        raise InvalidArgumentError("`retrain` is required: no complete cached ground truth for these settings"
                                   + ("" if path is None else f" at {path}"))
    for s in tqdm(todo, desc="LDS retrains", disable=not progress):
        rows = torch.nonzero(masks[s]).flatten()
        values = np.stack([_as_numpy(measure(retrain(rows, r))) for r in range(repeats)])
        if actual is None:
            actual = np.full((repeats, subsets, values.shape[1]), np.nan)
        actual[:, s], done[s] = values, True
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _save(path, settings, masks, actual, done)
    return torch.from_numpy(actual)


def spearman_per_column(a: Tensor, b: Tensor) -> Tensor:
    """Spearman correlation of column j of `a` with column j of `b` (Tensor[rows, cols]) -> Tensor[cols]."""
    out = []
    for j in range(a.shape[1]):
        x, z = a[:, j].numpy(), b[:, j].numpy()
        out.append(np.nan if np.ptp(x) == 0 or np.ptp(z) == 0 else stats.spearmanr(x, z)[0])
    return torch.tensor(out, dtype=torch.float64)


def _measure(model: nn.Module, task, X: Tensor, y: Tensor) -> Tensor:
    param = next(model.parameters())
    with torch.no_grad(), eval_mode(model):
        return task.measurement(task.forward(model, to_model(X, param.device, param.dtype)), y.to(param.device))


def _save(path: Path, settings: dict, masks: Tensor, actual: np.ndarray, done: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, settings=np.array(json.dumps(settings, sort_keys=True)), masks=masks.numpy(), actual=actual,
             done=done)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _check_settings(subsets: Any, fraction: Any, repeats: Any, retrain: Any) -> None:
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 3:
        raise InvalidArgumentError(f"`subsets` must be an integer >= 3, got {subsets!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise InvalidArgumentError(f"`repeats` must be a positive integer, got {repeats!r}")
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise InvalidArgumentError(f"`fraction` must lie strictly between 0 and 1, got {fraction!r}")
    if retrain is not None and not callable(retrain):
        raise InvalidArgumentError(f"`retrain` must be callable (subset_indices, seed) -> model, got {retrain!r}")


def _as_numpy(values: Tensor | Sequence[float]) -> np.ndarray:
    return torch.as_tensor(values).detach().cpu().to(torch.float64).reshape(-1).numpy()


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _key_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
