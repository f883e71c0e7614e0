"""Step 2 of the regression report: attribute the regressions to the new model's training data.

An `influence.Attributor` is fitted on the new model and its training data (into
`cache_dir` when given, so the app can reopen the same index), every training example is
scored on every regression, and the examples the report lists get their self-influence.
Warnings of the Attributor and a stationarity check (is the new model at a minimum of its
training objective, as influence assumes?) go to the diagnostics.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from influence.attributor import Attributor
from influence.data import ExampleData
from influence.errors import InfluenceWarning
from influence.harm import example_harm, harmed_counts
from influence.report import ranking
from influence.report.document import to_json_types
from influence.scoring import top_k
from influence.task import Task

STATIONARITY_WARNING = 0.05  # warn when ‖∇L(θ_new)‖ exceeds this multiple of the rms per-example gradient


@dataclass
class Attribution:
    """What step 2 found.

    Attributes:
        attr: the fitted Attributor (None when nothing regressed).
        scores: float64 [n_regressions, n_train], the package's sign convention.
        example_harm: float64 [n_train], `influence.harm.example_harm` of `scores`.
        self_influence: {train index: (self-influence, percentile)} for the listed examples.
        diagnostics: the Attributor's diagnostics, its warnings and the stationarity check.
    """

    attr: Attributor | None
    scores: np.ndarray
    example_harm: np.ndarray
    self_influence: dict
    diagnostics: dict


def attribute(model: nn.Module, train: ExampleData, queries: tuple | None, task: Task, opts, options: dict,
              clock) -> Attribution:
    """Fit the Attributor on `model` and `train`, score the `queries` (the regressions).

    Args:
        opts: the report's `ReportOptions` (method, damping, top, batch_size, seed, progress).
        options: extra keywords for `influence.Attributor` (e.g. `cache_dir`, `tol`).
        clock: records the time of each part ("fit", "scores", "self_influence").
    """
    n = len(train)
    diagnostics: dict[str, Any] = {"method": None, "warnings": []}
    if queries is None:
        return Attribution(None, np.zeros((0, n)), np.zeros(n), {}, diagnostics)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InfluenceWarning)
        attr = Attributor(model, train, task=task, method=opts.method, damping=opts.damping, progress=opts.progress,
                          seed=opts.seed, **options).fit()
        clock.lap("fit")
        scores = attr.scores(queries).double().cpu().numpy()
        clock.lap("scores")
        harm = example_harm(scores, n)
        self_influence = _self_influence(attr, train, scores, harm, opts.top, opts.seed)
        clock.lap("self_influence")
    diagnostics.update(to_json_types(attr.diagnostics.to_dict()))
    diagnostics["warnings"] = [str(w.message) for w in caught if issubclass(w.category, InfluenceWarning)]
    diagnostics["stationarity"] = _stationarity(model, train, task, opts.batch_size, opts.seed)
    if diagnostics["stationarity"] > STATIONARITY_WARNING:
        diagnostics["warnings"].append(
            f"the new model is not at a minimum of its training objective: ‖∇L‖ is {diagnostics['stationarity']:.2g} "
            "× the typical per-example gradient; influence assumes a minimum. Train it longer, or pass the task "
            "with the weight_decay it was trained with.")
    for message in diagnostics["warnings"]:
        warnings.warn(message, InfluenceWarning, stacklevel=3)
    return Attribution(attr, scores, harm, self_influence, diagnostics)


def _self_influence(attr: Attributor, train: ExampleData, scores: np.ndarray, harm: np.ndarray, top: int,
                    seed: int) -> dict[int, tuple[float, float]]:
    """{train index: (self-influence, percentile among training examples)} for the examples
    the report lists. Direct methods compute it for every example; iterative solvers (one
    solve per query) for the listed examples and a random reference sample of 256."""
    ranked = top_k([(0, torch.as_tensor(np.ascontiguousarray(scores)))], 10)
    counts = harmed_counts(ranked.harmful, len(harm))
    listed = sorted(set(np.argsort(-harm)[:top].tolist()) | set(np.argsort(-counts)[:top].tolist()))
    if not attr.method.queries_use_curvature:
        values = attr.self_influence().double().cpu().numpy()
        pct = ranking.percentile_rank(values)
        return {i: (float(values[i]), float(pct[i])) for i in listed}
    rng = np.random.default_rng(seed)
    reference = rng.choice(len(harm), size=min(256, len(harm)), replace=False).tolist()
    rows = listed + reference
    X, y = train.batch(rows)
    diag = attr.scores((X, y)).double().cpu().numpy()[np.arange(len(rows)), rows]
    ref = np.sort(diag[len(listed):])
    return {i: (float(v), float(np.searchsorted(ref, v, "right") / len(ref))) for i, v in zip(listed, diag)}


def _stationarity(model: nn.Module, train: ExampleData, task: Task, batch_size: int, seed: int) -> float:
    """‖∇L(θ)‖ / rms_i ‖∇ℓ_i(θ)‖ for the new model: about 0 at a minimum of its training objective
    L = mean loss + (weight_decay / 2)‖θ‖² (the rms over a random sample of 256 examples)."""
    from influence.batching import to_model
    from influence.gradients import per_example_grads
    from influence.model import FunctionalModel

    fm = FunctionalModel(model, task.parameters, forward=getattr(task, "forward", None))  # runs in eval mode
    theta = fm.theta.clone().requires_grad_(True)
    total = torch.zeros_like(theta)
    for _, x, y in train.batches(batch_size):
        x = to_model(x, fm.device, fm.dtype)
        total += torch.autograd.grad(task.loss(fm(theta, x), y.to(fm.device)).sum(), theta)[0]
    rows = np.random.default_rng(seed).choice(len(train), size=min(256, len(train)), replace=False)
    x, y = train.batch(sorted(rows.tolist()))
    per_example = per_example_grads(fm, task.loss, x, y)
    gradient = total / len(train) + task.weight_decay * fm.theta
    rms = float(per_example.pow(2).sum(dim=1).mean().sqrt())
    return float(gradient.norm()) / max(rms, 1e-30)
