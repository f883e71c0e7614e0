"""`regression_report`: which training data made the new model worse than the old one?

1. Run both models over the eval set; the regressions are the eval examples the old model
   got right and the new one gets wrong ("flipped"), plus those whose loss rose most.
2. Fit an `influence.Attributor` on the new model and its training data and score every
   training example on every regression (`score > 0` helpful, `< 0` harmful).
3. Rank: training examples by harm (`harm = −Σ_regressions score`); groups (each value of
   each `group_by` column) by their harm — a Newton step for removing the whole group where
   the dense curvature is affordable (`influence.report.group_influence`), else the sum of
   their members' harm — with share, count and confidence; and suspects (harmful to the
   most regressions, with self-influence).
4. Explain the most harmful groups of a table: per-column differences from the rest
   (see `influence.report.explain`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from influence.attributor import Attributor
from influence.data import ExampleData, as_data
from influence.errors import InfluenceWarning, InvalidArgumentError
from influence.gradients import per_example_grads
from influence.model import FunctionalModel
from influence.report import evaluation, ranking
from influence.report.document import ExampleEntry, Figure, GroupEntry, RegressionEntry, Report
from influence.report.explain import explain_group, headline
from influence.report.group_influence import newton_group_scores
from influence.task import ClassificationTask, Task

# method="auto": "exact" up to this many attributed parameters, else "cg". Building the dense
# curvature costs p curvature products once, CG about 100 per query, and a report has hundreds of
# queries, so "exact" is the faster choice whenever its p×p matrix fits in memory.
EXACT_MAX_PARAMS = 5000
NEWTON_MAX_GROUPS = 50  # group_estimator="auto": Newton group harm for columns with at most this many values
STATIONARITY_WARNING = 0.05  # warn when ‖∇L(θ_new)‖ exceeds this multiple of the rms per-example gradient


def regression_report(old_model: nn.Module, new_model: nn.Module, train: Any, eval: Any,
                      group_by: str | Sequence[str] | Mapping[str, Sequence], task: Task | None = None, *,
                      method: str = "auto", damping: float | None = None, input_column: str = "input",
                      label_column: str = "label", transform=None, max_regressions: int = 300,
                      loss_rise: int = 100, k: int = 10, top: int = 20, explain: int = 3,
                      permutations: int = 999, bootstrap: int = 200, group_estimator: str = "auto",
                      batch_size: int = 1024, seed: int = 0,
                      progress: bool = False, **attributor_options: Any) -> Report:
    """Why did `new_model` regress against `old_model`? Attribute its new mistakes to its training data.

    Args:
        old_model, new_model: the two versions (same inputs and outputs); `new_model` was
            trained on `train`.
        train: the new model's training data (`datasets.Dataset` with an input, a label and
            metadata columns; or any form `influence.Attributor` accepts).
        eval: the evaluation data both models are compared on (same form).
        group_by: metadata column name(s) of `train` whose values form the groups (e.g.
            "source" or ["source", "day"]), or a mapping `{name: one label per training
            example}`.
        task: what the models compute (default `ClassificationTask()`); its `weight_decay`
            should be the L2 term the new model was trained with.
        method: attribution method, or "auto": "exact" up to 5000 attributed parameters,
            else "cg".
        damping: λ (default: chosen by the Attributor, see its diagnostics).
        input_column, label_column, transform: how to read a `datasets.Dataset`.
        max_regressions: at most this many flipped examples (largest loss rise first).
        loss_rise: how many more eval examples with the largest loss rise are added.
        k: most harmful training examples kept per regression.
        top: length of the `harmful_examples` and `suspects` lists.
        explain: how many of the most harmful groups get a per-column explanation.
        permutations, bootstrap: resamples for the confidence figures (0 disables).
        group_estimator: how a group's harm is computed: "newton" (one Newton step for
            removing the whole group: accurate for large, coherent groups such as a
            corrupted batch; a dense p×p curvature per group), "first_order" (the sum of
            the members' scores), or "auto": newton when the model has at most 5000
            attributed parameters and the column at most 50 groups.
        seed: seed of every random choice.
        **attributor_options: passed to `influence.Attributor` (e.g. `tol`, `curvature`).
    Returns:
        `Report`; `report.groups` is ordered most harmful first. Sign convention: score > 0
        helpful, < 0 harmful; a group's harm = −(sum of its scores over the regressions).
    Raises:
        InvalidArgumentError naming the argument: a missing group column, models with
        different outputs, eval labels the models cannot produce, ...
    """
    clock = _Clock()
    _check_options(old_model, new_model, max_regressions=max_regressions, k=k, top=top,
                   group_estimator=group_estimator)
    task = ClassificationTask() if task is None else task
    read = dict(input_column=input_column, label_column=label_column, transform=transform)
    train_data, eval_data = _in_memory(as_data(train, "train", **read)), _in_memory(as_data(eval, "eval", **read))
    groups = _group_labels(train, group_by, len(train_data))
    train_labels = _labels(train_data)
    frame = _metadata_frame(train, input_column, groups, {label_column: train_labels})

    old = evaluation.evaluate(old_model, eval_data, task, "old_model", batch_size)
    new = evaluation.evaluate(new_model, eval_data, task, "new_model", batch_size)
    evaluation.check_same_outputs(old, new)
    chosen, kinds = evaluation.select_regressions(old, new, max_regressions, loss_rise)
    clock.lap("evaluate")

    n_train = len(train_data)
    scores, self_influence, diagnostics, full = _attribute(new_model, train_data, eval_data, chosen, task, method,
                                                           damping, top, batch_size, seed, progress, clock,
                                                           attributor_options)
    example_harm = -scores.sum(axis=0)
    queries = eval_data.batch(chosen.tolist())
    rng = np.random.default_rng(seed)
    stats = []
    for column, labels in groups.items():
        values, codes, member = ranking.indicator(labels)
        first = -np.asarray(member.T @ scores.T).T  # [r, g]: summed first-order harm
        per_regression, estimator = first, "first_order"
        if _use_newton(group_estimator, new_model, task, diagnostics, len(values)):
            per_regression = -newton_group_scores(new_model, task, train_data, codes, len(values), queries,
                                                  diagnostics["damping"], diagnostics["curvature"], full=full)
            estimator = "newton"
        stats.append(ranking.group_stats(column, values, np.bincount(codes, minlength=len(values)), per_regression,
                                         first, example_harm, estimator, permutations, bootstrap, rng))
    entries = _group_entries(stats)
    clock.lap("rank")
    explained = [g for g in entries if g.harm > 0][:explain]
    _explain(explained, entries, frame, groups, example_harm, label_column,
             evaluation.label_agreement(old_model, train_data, task, batch_size))
    clock.lap("explain")
    figures = _figures(entries, explained, frame, groups)
    clock.lap("figures")

    harm_idx, harm_scores = ranking.top_harmful(scores, k)
    help_idx, help_scores = ranking.top_harmful(-scores, k)
    counts = ranking.harmful_to(harm_idx, n_train)

    def example(i: int) -> ExampleEntry:
        si, pct = self_influence.get(i, (None, None))
        return ExampleEntry(int(i), float(example_harm[i]), int(counts[i]), si, pct, train_labels[i],
                            {c: groups[c][i] for c in groups})

    harmful = [example(i) for i in np.argsort(-example_harm, kind="stable")[:top] if example_harm[i] > 0]
    suspects = [example(i) for i in np.lexsort((-example_harm, -counts))[:top] if counts[i] >= 2]
    regressions = [RegressionEntry(int(j), kinds[r], _scalar(old["targets"][j]), _scalar(old["predictions"][j]),
                                   _scalar(new["predictions"][j]), float(old["losses"][j]), float(new["losses"][j]),
                                   _scored(harm_idx[r], harm_scores[r]), _scored(help_idx[r], -help_scores[r]))
                   for r, j in enumerate(chosen.tolist())]
    diagnostics["seconds"] = clock.laps
    settings = {"method": method, "damping": damping, "group_by": list(groups), "max_regressions": max_regressions,
                "loss_rise": loss_rise, "k": k, "top": top, "explain": explain, "permutations": permutations,
                "bootstrap": bootstrap, "group_estimator": group_estimator, "seed": seed, "task": type(task).__name__,
                "weight_decay": task.weight_decay}
    return Report(_summary(old, new, kinds, n_train, entries), entries, regressions, harmful, suspects, diagnostics,
                  settings, figures)


def _check_options(old_model: Any, new_model: Any, group_estimator: str, **counts: Any) -> None:
    for name, model in (("old_model", old_model), ("new_model", new_model)):
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"`{name}` must be a torch.nn.Module, got {type(model).__name__}")
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(f"`{name}` must be a positive integer, got {value!r}")
    if group_estimator not in ("auto", "newton", "first_order"):
        raise InvalidArgumentError(f"`group_estimator` must be 'auto', 'newton' or 'first_order', "
                                   f"got {group_estimator!r}")


def _explain(explained: list[GroupEntry], entries: list[GroupEntry], frame, groups: dict, example_harm: np.ndarray,
             label_column: str, agreement) -> None:
    """Fill `findings`, `headline` and `examples` of the groups to explain. Each is compared
    with the rows outside every other suspicious (harmful, confident) group of its column."""
    n = len(example_harm)
    suspicious = [g for g in entries if g.harm > 0 and g.confidence >= 0.9 and g.share >= 0.1]
    member = lambda g: np.fromiter((v == g.value for v in groups[g.column]), bool, n)
    for g in explained:
        others = [member(h) for h in suspicious if h.column == g.column and h is not g]
        g.findings = explain_group(frame, member(g), label_column=label_column if label_column in frame else None,
                                   agreement=agreement, skip=[g.column],
                                   reference=~np.logical_or.reduce(others) if others else None)
        g.headline = headline(g.findings)
        rows = np.flatnonzero(member(g))
        g.examples = [{"train_index": int(i), "harm": float(example_harm[i])}
                      for i in rows[np.argsort(-example_harm[rows], kind="stable")[:5]]]


def _use_newton(choice: str, model: nn.Module, task: Task, diagnostics: dict, n_groups: int) -> bool:
    """Newton group harm: when asked, or ("auto") when the dense curvature is affordable."""
    if choice == "first_order" or diagnostics.get("curvature") is None or n_groups < 2:
        return False
    return choice == "newton" or (FunctionalModel(model, task.parameters).p <= EXACT_MAX_PARAMS
                                  and n_groups <= NEWTON_MAX_GROUPS)


def _scored(indices: np.ndarray, scores: np.ndarray) -> list[dict]:
    return [{"train_index": int(i), "score": float(s)} for i, s in zip(indices, scores)]


def _attribute(model: nn.Module, train: ExampleData, eval_data: ExampleData, chosen: np.ndarray, task: Task,
               method: str, damping: float | None, top: int, batch_size: int, seed: int, progress: bool,
               clock: _Clock, options: dict) -> tuple[np.ndarray, dict, dict, torch.Tensor | None]:
    """Scores [n_regressions, n_train] of the new model's training data on the regressions,
    self-influence of the examples the report lists, the attribution diagnostics, and the
    damped curvature `H + λI` (p×p) when the method built it ("exact"), else None."""
    diagnostics: dict[str, Any] = {"method": None, "warnings": []}
    if not len(chosen):
        return np.zeros((0, len(train))), {}, diagnostics, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InfluenceWarning)
        attr = Attributor(model, train, task=task, method=_resolve_method(method, model, task), damping=damping,
                          progress=progress, seed=seed, **options).fit()
        clock.lap("fit")
        scores = attr.scores(eval_data.batch(chosen.tolist())).double().cpu().numpy()
        clock.lap("scores")
        self_influence = _self_influence(attr, train, scores, top, seed)
        clock.lap("self_influence")
    diagnostics.update(_jsonable(attr.diagnostics))
    diagnostics["warnings"] = [str(w.message) for w in caught if issubclass(w.category, InfluenceWarning)]
    diagnostics["stationarity"] = _stationarity(model, train, task, batch_size, seed)
    if diagnostics["stationarity"] > STATIONARITY_WARNING:
        diagnostics["warnings"].append(
            f"the new model is not at a minimum of its training objective: ‖∇L‖ is {diagnostics['stationarity']:.2g} "
            "× the typical per-example gradient; influence assumes a minimum. Train it longer, or pass the task "
            "with the weight_decay it was trained with.")
    for message in diagnostics["warnings"]:
        warnings.warn(message, InfluenceWarning, stacklevel=3)
    full = None
    if attr.method.name == "exact":  # its eigendecomposition of H: H + λI = V diag(e + λ) Vᵀ
        state = attr.method.state_dict()
        V = state["eigenvectors"]
        full = (V * (state["eigenvalues"] + attr.damping)) @ V.T
    return scores, self_influence, diagnostics, full


# ------------------------------------------------------------------ inputs
def _group_labels(train: Any, group_by: Any, n: int) -> dict[str, list]:
    """{column: one hashable label per training example}; errors name `group_by`."""
    if isinstance(group_by, Mapping):
        out = {str(k): list(v) for k, v in group_by.items()}
    else:
        names = [group_by] if isinstance(group_by, str) else list(group_by)
        if not names or not all(isinstance(c, str) and c for c in names):
            raise InvalidArgumentError(f"`group_by` must name one or more columns of `train`, got {group_by!r}")
        columns = getattr(train, "column_names", None)
        if columns is None:
            raise InvalidArgumentError(f"`group_by` names columns {names}, but `train` is not a datasets.Dataset; "
                                       "pass a mapping {name: one label per training example} instead")
        missing = [c for c in names if c not in columns]
        if missing:
            raise InvalidArgumentError(f"`group_by` names column(s) {missing} that `train` does not have; "
                                       f"its columns are {columns}")
        out = {c: list(train[c]) for c in names}
    for name, labels in out.items():
        if len(labels) != n:
            raise InvalidArgumentError(f"`group_by[{name!r}]` has {len(labels)} labels but `train` has {n} examples")
        out[name] = [_scalar(v) for v in labels]
        try:
            set(out[name])
        except TypeError:
            raise InvalidArgumentError(f"`group_by` column {name!r} holds unhashable values (lists?); "
                                       "group by a column of scalars") from None
    return out


def _metadata_frame(train: Any, input_column: str, groups: dict[str, list], labels: dict[str, list]):
    """pandas DataFrame of the training metadata: every column but the input of a
    `datasets.Dataset`, else the group labels and the labels."""
    import pandas as pd

    columns = getattr(train, "column_names", None)
    keep = [c for c in columns or [] if c != input_column]
    return train.select_columns(keep).to_pandas() if keep else pd.DataFrame({**groups, **labels})


def _scalar(value: Any) -> Any:
    """Plain Python value; NaN becomes None (so missing values form one group)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _in_memory(data: ExampleData) -> ExampleData:
    """The same examples read once into tensors (the report makes several passes; the
    curvature holds the inputs in memory anyway)."""
    inputs, targets = data.batch(range(len(data)))
    return ExampleData(data.source, len(targets), lambda idx: (inputs[idx], targets[idx]), data.argument)


def _labels(data: ExampleData) -> list:
    return [_scalar(t) for _, _, y in data.batches(4096) for t in y]


# ------------------------------------------------------------------ attribution
def _resolve_method(method: str, model: nn.Module, task: Task) -> str:
    if method != "auto":
        return method
    p = FunctionalModel(model, task.parameters).p
    return "exact" if p <= EXACT_MAX_PARAMS else "cg"


def _self_influence(attr: Attributor, train: ExampleData, scores: np.ndarray, top: int, seed: int
                    ) -> dict[int, tuple[float, float]]:
    """{train index: (self-influence, percentile among training examples)} for the examples
    the report lists. Direct methods compute it for every example; iterative solvers (one
    solve per query) for the listed examples and a random reference sample of 256."""
    harm = -scores.sum(axis=0)
    counts = ranking.harmful_to(ranking.top_harmful(scores, 10)[0], len(harm))
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
    fm = FunctionalModel(model, task.parameters)
    theta = fm.theta.clone().requires_grad_(True)
    total = torch.zeros_like(theta)
    with evaluation.eval_mode(model):
        for _, x, y in train.batches(batch_size):
            x = x.to(fm.device)
            x = x.to(fm.dtype) if x.is_floating_point() else x
            total += torch.autograd.grad(task.loss(fm(theta, x), y.to(fm.device)).sum(), theta)[0]
        rows = np.random.default_rng(seed).choice(len(train), size=min(256, len(train)), replace=False)
        x, y = train.batch(sorted(rows.tolist()))
        per_example = per_example_grads(fm, task.loss, x, y)
    gradient = total / len(train) + task.weight_decay * fm.theta
    rms = float(per_example.pow(2).sum(dim=1).mean().sqrt())
    return float(gradient.norm()) / max(rms, 1e-30)


def _jsonable(d: dict) -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            out[key] = value
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            out[key] = value.item()
        else:
            out[key] = str(value)
    return out


# ------------------------------------------------------------------ assembly
def _group_entries(stats: list[ranking.GroupStats]) -> list[GroupEntry]:
    entries = []
    for s in stats:
        for g, value in enumerate(s.values):
            entries.append(GroupEntry(
                column=s.column, value=value, harm=float(s.harm[g]), share=float(s.share[g]), count=int(s.count[g]),
                estimator=s.estimator, first_order_harm=float(s.first_order_harm[g]),
                mean_harm=float(s.harm[g] / s.count[g]), p_value=float(s.p_value[g]),
                confidence=float(1 - s.p_value[g]), share_interval=[float(s.share_low[g]), float(s.share_high[g])],
                top_rate=float(s.top_rate[g])))
    entries.sort(key=lambda e: -e.harm)
    return entries


def _summary(old: dict, new: dict, kinds: list[str], n_train: int, entries: list[GroupEntry]) -> dict:
    classify = old["correct"] is not None
    flipped = int((old["correct"] & ~new["correct"]).sum()) if classify else 0
    s = {"n_train": n_train, "n_eval": len(old["losses"]), "n_regressions": len(kinds), "n_flipped": flipped,
         "n_improved": int((~old["correct"] & new["correct"]).sum()) if classify else 0,
         "n_loss_rise": kinds.count("loss_rise"),
         "old_accuracy": float(old["correct"].mean()) if classify else None,
         "new_accuracy": float(new["correct"].mean()) if classify else None,
         "old_mean_loss": float(old["losses"].mean()), "new_mean_loss": float(new["losses"].mean())}
    if classify:
        text = (f"{flipped} eval examples went from right to wrong and {s['n_improved']} from wrong to right "
                f"(accuracy {s['old_accuracy']:.3f} → {s['new_accuracy']:.3f}).")
    else:
        text = f"Mean eval loss {s['old_mean_loss']:.4g} → {s['new_mean_loss']:.4g}."
    worst = entries[0] if entries and entries[0].harm > 0 and kinds else None
    if worst is not None:
        text += (f" Most harmful: {worst.column} {worst.value} ({100 * worst.share:.0f}% of the harm, "
                 f"confidence {worst.confidence:.3f})")
        text += f": {worst.headline}." if worst.headline else "."
    elif not kinds:
        text += " No eval example got worse: nothing to attribute."
    s["headline"] = text
    return s


def _figures(entries: list[GroupEntry], explained: list[GroupEntry], frame, groups: dict) -> list[Figure]:
    from influence.report.figures import column_comparison_chart, group_harm_chart

    shown = entries[:12]
    figures = [Figure("Harm of each group on the regressions (most harmful on top)",
                      group_harm_chart([f"{g.column}={g.value}" for g in shown], [g.harm for g in shown]))]
    for g in explained[:1]:
        columns = [c for f in g.findings[:2] for c in f.columns][:2]
        if not columns or frame is None:
            continue
        mask = np.fromiter((v == g.value for v in groups[g.column]), bool, len(frame))
        panels = [(c, frame[c][mask].dropna().to_numpy(), frame[c][~mask].dropna().to_numpy()) for c in columns]
        figures.append(Figure(f"{g.column} = {g.value} vs the rest of the training data",
                              column_comparison_chart(f"{g.column} = {g.value} (red) vs the rest (gray)", panels)))
    return figures


class _Clock:
    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 3)
        self.last = now
