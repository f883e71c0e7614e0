"""Group harm with a Newton step for removing the whole group (second-order group influence).

Summing first-order scores over a group predicts what removing the group does only when the
group is a small, unremarkable part of the data. A corrupted batch is neither: its rows can
dominate the curvature in some direction (e.g. a column filled with extreme values), and
the sum of its scores can then be far off, even of the wrong sign. Removing group G from the
training objective L = (1/n) Σ ℓ_i + (wd/2)‖θ‖² leaves the gradient −(1/n) Σ_G g_i at θ̂ and
the curvature H − H_G, so one Newton step predicts

    Δ loss_j ≈ q_jᵀ (H + λI − H_G)⁻¹ Σ_{i∈G} g_i / n,    H_G = (1/n) Σ_{i∈G} ∇²ℓ_i,

which replaces `Σ_{i∈G} score[j, i] = q_jᵀ (H + λI)⁻¹ Σ_{i∈G} g_i` (same scale and sign
convention: positive = the group helped regression j). It costs a dense p×p curvature per
group (p curvature products over the group's rows) and a p×p solve, so the report uses it
when the first-order `exact` method would also be affordable.
"""

from __future__ import annotations

import numpy as np
import torch

from influence.curvature import Curvature
from influence.data import ExampleData
from influence.gradients import per_example_grads
from influence.model import FunctionalModel, eval_mode
from influence.task import Task


def _subset(data: ExampleData, rows: list[int]) -> ExampleData:
    return ExampleData(data.source, len(rows), lambda ids: data.batch([rows[i] for i in ids]), data.argument)


def _cast(fm: FunctionalModel, x: torch.Tensor) -> torch.Tensor:
    x = x.to(fm.device)
    return x.to(fm.dtype) if x.is_floating_point() else x


def group_gradient_sums(fm: FunctionalModel, task: Task, train: ExampleData, codes: np.ndarray, n_groups: int,
                        batch_size: int = 512) -> torch.Tensor:
    """Σ_{i∈G} ∇ℓ_i for every group: Tensor[n_groups, p] (one backward pass per group and batch)."""
    sums = torch.zeros(n_groups, fm.p, dtype=fm.dtype, device=fm.device)
    theta = fm.theta.clone().requires_grad_(True)
    for rows, x, y in train.batches(batch_size):
        losses = task.loss(fm(theta, _cast(fm, x)), y.to(fm.device))
        batch_codes = torch.as_tensor(codes[rows.start:rows.stop], device=fm.device)
        present = batch_codes.unique().tolist()
        for k, g in enumerate(present):
            weight = (batch_codes == g).to(losses.dtype)
            sums[g] += torch.autograd.grad(losses @ weight, theta, retain_graph=k + 1 < len(present))[0]
    return sums


def newton_group_scores(model: torch.nn.Module, task: Task, train: ExampleData, codes: np.ndarray, n_groups: int,
                        queries: tuple[torch.Tensor, torch.Tensor], damping: float, curvature: str = "ggn",
                        batch_size: int = 512, full: torch.Tensor | None = None) -> np.ndarray:
    """Newton-step group scores, float[n_queries, n_groups] (positive = the group helped).

    Args:
        model: the (new) model; its attributed parameters are `task.parameters`.
        train: its training data; `codes[i]` is the group (0..n_groups-1) of example i.
        queries: (inputs, targets) of the regressions.
        damping: λ, the same as the first-order scores used.
        curvature: "ggn" or "hessian", as the Attributor.
        full: `H + λI` over all of `train` if already known (p×p), else it is built here.
    """
    fm = FunctionalModel(model, task.parameters)
    n, wd = len(train), task.weight_decay
    eye = torch.eye(fm.p, dtype=fm.dtype, device=fm.device)
    with eval_mode(model):
        Q = per_example_grads(fm, task.measurement, _cast(fm, queries[0]), queries[1].to(fm.device))  # [r, p]
        sums = group_gradient_sums(fm, task, train, codes, n_groups, batch_size)
        if full is None:
            full = Curvature(fm, task, train, curvature, batch_size).dense() + damping * eye
        full = full.to(fm.dtype)
        out = np.zeros((Q.shape[0], n_groups))
        for g in range(n_groups):
            rows = np.flatnonzero(codes == g).tolist()
            group = Curvature(fm, task, _subset(train, rows), curvature, batch_size).dense()
            reduced = full - (group - wd * eye) * (len(rows) / n)
            out[:, g] = (Q @ torch.linalg.solve(reduced, sums[g])).double().cpu().numpy()
    return out
