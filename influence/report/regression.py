"""`regression_report`: which training data made the new model worse than the old one, and would
removing it repair the model? Five steps, one function each:

1. evaluate — both models over the eval set; the regressions are the eval examples the old
   model got right and the new one gets wrong ("flipped"), plus those whose loss rose most;
2. attribute — an `influence.Attributor` on the new model and its training data scores every
   training example on every regression (`score > 0` helpful, `< 0` harmful);
3. rank — harm (`influence.harm`: the estimated drop of the regressions' summed loss if the
   data were removed, in units of the eval loss) of every training example and of every
   value of each `group_by` column, with share, count and confidence, and suspects;
4. explain — how the most harmful groups of a table differ from the rest (`explain.py`);
5. verify — estimated (and with `verify=True` measured by retraining) eval metrics with each
   top group removed and with the reviewer's flags applied (`verification.py`);

then `assemble` builds the `Report`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from influence.data import ExampleData, as_data
from influence.errors import InvalidArgumentError
from influence.harm import ESTIMATORS, GroupHarm, group_codes, group_harm, harmed_counts
from influence.newton import Metrics
from influence.report import evaluation, ranking
from influence.report.attribution import Attribution, attribute
from influence.report.document import ExampleEntry, Figure, GroupEntry, RegressionEntry, Report, to_json_types
from influence.report.explain import explain_group, headline
from influence.report.fingerprint import data_fingerprint, model_fingerprint
from influence.report.flags import Flag, edits, read_flags
from influence.report.verification import VerificationEntry, flag_candidate, group_candidates, verify
from influence.scoring import top_k
from influence.task import ClassificationTask, Task


@dataclass
class ReportOptions:
    """How `regression_report` works; every field is a keyword of `regression_report`.

    method: attribution method; "auto" (the library's default) picks one by problem size and
        says which in the diagnostics.
    damping: λ (None: chosen by the Attributor, see its diagnostics).
    max_regressions: at most this many flipped examples (largest loss rise first).
    loss_rise: how many more eval examples with the largest loss rise are added.
    k: most harmful / helpful training examples kept per regression.
    top: length of the `harmful_examples` and `suspects` lists.
    explain: how many of the most harmful groups get a per-column explanation.
    permutations, bootstrap: resamples for the confidence figures (0 disables).
    group_estimator: "newton" (group removal), "first_order" or "auto" (see `influence.harm`).
    candidates: how many of the most harmful groups are verified (estimated, and measured
        with `verify=True`).
    batch_size, seed, progress: batches of the passes, seed of every random choice, bars.
    """

    method: str = "auto"
    damping: float | None = None
    max_regressions: int = 300
    loss_rise: int = 100
    k: int = 10
    top: int = 20
    explain: int = 3
    permutations: int = 999
    bootstrap: int = 200
    group_estimator: str = "auto"
    candidates: int = 3
    batch_size: int = 1024
    seed: int = 0
    progress: bool = False

    def __post_init__(self):
        for name in ("max_regressions", "k", "top", "batch_size"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("loss_rise", "explain", "permutations", "bootstrap", "candidates", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.group_estimator not in ESTIMATORS:
            raise InvalidArgumentError(f"`group_estimator` must be one of {list(ESTIMATORS)}, "
                                       f"got {self.group_estimator!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "an integer ≥ 0"
        raise InvalidArgumentError(f"`{name}` must be {kind}, got {value!r}")


OPTION_NAMES = {f for f in ReportOptions.__dataclass_fields__}


def regression_report(old_model: nn.Module, new_model: nn.Module, train: Any, eval: Any,
                      group_by: str | Sequence[str] | Mapping[str, Sequence], task: Task | None = None, *,
                      input_column: str = "input", label_column: str = "label", transform=None,
                      class_names: Sequence[str] | None = None, verify: bool = False,
                      retrain: Callable[[Any], nn.Module] | None = None,
                      flags: str | Path | Sequence[Flag] | None = None, **options: Any) -> Report:
    """Why did `new_model` regress against `old_model`, and would removing the culprit fix it?

    Args:
        old_model, new_model: the two versions (same inputs and outputs); `new_model` was
            trained on `train`.
        train: the new model's training data (`datasets.Dataset` with an input, a label and
            metadata columns; or any form `influence.Attributor` accepts).
        eval: the evaluation data both models are compared on (same form; it needs no
            metadata columns).
        group_by: metadata column name(s) of `train` whose values form the groups (e.g.
            "source" or ["source", "day"]), or a mapping `{name: one label per training example}`.
        task: what the models compute (default `ClassificationTask()`); its `weight_decay`
            should be the L2 term the new model was trained with.
        input_column, label_column, transform: how to read a `datasets.Dataset`.
        class_names: one name per class, shown in the report (and used to read corrected
            labels in `flags`).
        verify: measure each candidate's fix by retraining with `retrain`.
        retrain: `retrain(modified_train) -> trained nn.Module`; `modified_train` has the form
            of `train` (a Dataset with the same columns, or `(X, y)`).
        flags: reviewer flags (a CSV / JSONL / app verdicts file, or `Flag`s): verified as one
            more candidate (their rows removed or relabelled).
        **options: the fields of `ReportOptions` (k, top, permutations, ...); every other
            keyword goes to `influence.Attributor` (e.g. `tol`, `curvature`, `cache_dir`).
    Returns:
        `Report`; `report.groups` is ordered most harmful first. Harm is in units of the eval
        loss: the estimated drop of the regressions' summed loss if the data were removed
        (score > 0 helpful, < 0 harmful; harm = −Σ scores / n_train).
    Raises:
        InvalidArgumentError naming the argument: a missing group column, models with
        different outputs, eval labels the models cannot produce, ...
    """
    clock = _Clock()
    opts = ReportOptions(**{k: v for k, v in options.items() if k in OPTION_NAMES})
    attributor_options = {k: v for k, v in options.items() if k not in OPTION_NAMES}
    for name, model in (("old_model", old_model), ("new_model", new_model)):
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"`{name}` must be a torch.nn.Module, got {type(model).__name__}")
    task = ClassificationTask() if task is None else task
    inputs = _read(train, eval, group_by, dict(input_column=input_column, label_column=label_column,
                                                 transform=transform), class_names)
    flag_list = _checked_flags(flags, inputs, verify, retrain)
    compared = _evaluate(old_model, new_model, inputs, task, opts)
    clock.lap("evaluate")
    attribution = attribute(new_model, inputs.train_data, compared.queries(inputs), task, opts,
                            attributor_options, clock)
    entries = _rank(attribution, inputs, compared, opts)
    clock.lap("rank")
    _explain(entries, inputs, attribution.example_harm, old_model, task, opts)
    clock.lap("explain")
    checked = _verify(entries, inputs, compared, attribution, task, opts, verify, retrain, flag_list)
    clock.lap("verify")
    return _assemble(inputs, compared, attribution, entries, checked, task, opts, clock,
                     {"old_model": model_fingerprint(old_model), "new_model": model_fingerprint(new_model),
                      "train": data_fingerprint(inputs.train_data), "eval": data_fingerprint(inputs.eval_data)})


# ------------------------------------------------------------------ inputs
@dataclass
class _Inputs:
    train: Any                   # as the user gave it
    train_data: ExampleData      # read once into memory
    eval_data: ExampleData
    groups: dict[str, list]      # column -> one label per training example
    labels: list                 # training labels
    frame: Any                   # pandas DataFrame of the training metadata
    read: dict
    class_names: list[str] | None


def _read(train: Any, eval: Any, group_by: Any, read: dict, class_names: Sequence[str] | None) -> _Inputs:
    train_data = _in_memory(as_data(train, "train", **read))
    eval_data = _in_memory(as_data(eval, "eval", **read))
    groups = _group_labels(train, group_by, len(train_data))
    labels = [_plain_value(t) for _, _, y in train_data.batches(4096) for t in y]
    frame = _metadata_frame(train, read["input_column"], groups, {read["label_column"]: labels})
    names = None if class_names is None else [str(c) for c in class_names]
    label = read["label_column"]
    if names is not None and label in frame:  # findings name classes ("label `>50K`"), not indices
        frame[label] = [names[v] if isinstance(v, int) and 0 <= v < len(names) else v
                        for v in frame[label].tolist()]
    return _Inputs(train, train_data, eval_data, groups, labels, frame, read, names)


def _checked_flags(flags: Any, inputs: _Inputs, verify: bool, retrain: Callable | None
                   ) -> list[Flag]:
    """The flags, every id, verdict and label checked, and `verify`'s needs, before any work."""
    flag_list = _flags(flags)
    edits(flag_list, len(inputs.train_data), inputs.class_names)
    if verify and retrain is None:
        raise InvalidArgumentError("`verify=True` needs `retrain`, a function that trains the new "
                                   "model's architecture on given training data (the CLI: "
                                   "--retrain module:function)")
    return flag_list


def _flags(flags: Any) -> list[Flag]:
    if flags is None:
        return []
    if isinstance(flags, (str, Path)):
        return read_flags(flags)
    flags = list(flags)
    if not all(isinstance(f, Flag) for f in flags):
        raise InvalidArgumentError("`flags` must be a path to a flags file or a sequence of influence.report.Flag")
    return flags


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
        out[name] = [_plain_value(v) for v in labels]
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


def _plain_value(value: Any) -> Any:
    """A plain Python value of a label or group value; NaN becomes None (one missing group)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _in_memory(data: ExampleData) -> ExampleData:
    """The same examples read once into tensors (the report makes several passes)."""
    inputs, targets = data.batch(range(len(data)))
    return ExampleData(data.source, len(targets), lambda idx: (inputs[idx], targets[idx]), data.argument,
                       data.metadata_columns)


# ------------------------------------------------------------------ 1. evaluate
@dataclass
class _Comparison:
    old: dict
    new: dict
    chosen: np.ndarray      # eval indices of the regressions
    kinds: list[str]        # "flipped" / "loss_rise", per regression

    def queries(self, inputs: _Inputs):
        return inputs.eval_data.batch(self.chosen.tolist()) if len(self.chosen) else None

    def metrics(self, which: str) -> Metrics:
        result = self.old if which == "old" else self.new
        accuracy = None if result["correct"] is None else float(result["correct"].mean())
        return Metrics(accuracy, float(result["losses"].mean()))


def _evaluate(old_model: nn.Module, new_model: nn.Module, inputs: _Inputs, task: Task,
              opts: ReportOptions) -> _Comparison:
    old = evaluation.evaluate(old_model, inputs.eval_data, task, "old_model", opts.batch_size)
    new = evaluation.evaluate(new_model, inputs.eval_data, task, "new_model", opts.batch_size)
    evaluation.check_same_outputs(old, new)
    chosen, kinds = evaluation.select_regressions(old, new, opts.max_regressions, opts.loss_rise)
    return _Comparison(old, new, chosen, kinds)


# ------------------------------------------------------------------ 3. rank
def _rank(attribution: Attribution, inputs: _Inputs, compared: _Comparison, opts: ReportOptions) -> list[GroupEntry]:
    """Every value of every group column, most harmful first (harm in eval-loss units)."""
    rng = np.random.default_rng(opts.seed)
    queries = compared.queries(inputs)
    entries = []
    for column, labels in inputs.groups.items():
        if attribution.attr is None:  # nothing regressed: every group has zero harm
            values, codes = group_codes(labels)
            result = GroupHarm(values, np.bincount(codes, minlength=len(values)), np.zeros((0, len(values))))
        else:
            result = group_harm(attribution.attr, queries, labels, scores=attribution.scores,
                                estimator=opts.group_estimator, train=inputs.train_data)
        stats = ranking.group_stats(column, result.values, result.count, result.per_query, result.first_order,
                                    attribution.example_harm, result.estimator, opts.permutations, opts.bootstrap,
                                    rng)
        entries += _group_entries(stats)
    entries.sort(key=lambda e: -e.harm)
    return entries


def _group_entries(s: ranking.GroupStats) -> list[GroupEntry]:
    return [GroupEntry(column=s.column, value=value, harm=float(s.harm[g]), share=float(s.share[g]),
                       count=int(s.count[g]), estimator=s.estimator, first_order_harm=float(s.first_order_harm[g]),
                       mean_harm=float(s.harm[g] / s.count[g]), p_value=float(s.p_value[g]),
                       confidence=float(1 - s.p_value[g]),
                       share_interval=[float(s.share_low[g]), float(s.share_high[g])], top_rate=float(s.top_rate[g]))
            for g, value in enumerate(s.values)]


# ------------------------------------------------------------------ 4. explain
def _explain(entries: list[GroupEntry], inputs: _Inputs, example_harm_: np.ndarray, old_model: nn.Module, task: Task,
             opts: ReportOptions) -> None:
    """Fill `findings`, `headline` and `examples` of the most harmful groups. Each is compared
    with the rows outside every other suspicious (harmful, confident) group of its column."""
    explained = [g for g in entries if g.harm > 0][:opts.explain]
    if not explained:
        return
    agreement = evaluation.label_agreement(old_model, inputs.train_data, task, opts.batch_size)
    n, label = len(example_harm_), inputs.read["label_column"]
    suspicious = [g for g in entries if g.harm > 0 and g.confidence >= 0.9 and g.share >= 0.1]
    member = lambda g: np.fromiter((v == g.value for v in inputs.groups[g.column]), bool, n)
    for g in explained:
        others = [member(h) for h in suspicious if h.column == g.column and h is not g]
        g.findings = explain_group(inputs.frame, member(g), label_column=label if label in inputs.frame else None,
                                   agreement=agreement, skip=[g.column],
                                   reference=~np.logical_or.reduce(others) if others else None)
        g.headline = headline(g.findings)
        rows = np.flatnonzero(member(g))
        g.examples = [{"train_index": int(i), "harm": float(example_harm_[i])}
                      for i in rows[np.argsort(-example_harm_[rows], kind="stable")[:5]]]


# ------------------------------------------------------------------ 5. verify
def _verify(entries: list[GroupEntry], inputs: _Inputs, compared: _Comparison, attribution: Attribution, task: Task,
            opts: ReportOptions, measure: bool, retrain: Callable | None, flags: list[Flag]) -> list[VerificationEntry]:
    if measure and retrain is None:
        raise InvalidArgumentError("`verify=True` needs `retrain`, a function that trains the new model's "
                                   "architecture on given training data (the CLI: --retrain module:function)")
    if attribution.attr is None:
        return []
    candidates = group_candidates(entries, inputs.groups, opts.candidates)
    fix = flag_candidate(flags, len(inputs.train_data), inputs.class_names)
    candidates += [fix] if fix is not None else []
    return verify(candidates, attribution.attr, inputs.train, inputs.train_data, inputs.eval_data, task,
                  compared.metrics("old"), compared.metrics("new"), retrain, measure,
                  inputs.read["label_column"], opts.batch_size)


# ------------------------------------------------------------------ assemble
def _assemble(inputs: _Inputs, compared: _Comparison, attribution: Attribution, entries: list[GroupEntry],
              checked: list[VerificationEntry], task: Task, opts: ReportOptions, clock: _Clock,
              fingerprints: dict) -> Report:
    harm_, n_train = attribution.example_harm, len(inputs.train_data)
    scores = attribution.scores
    top = top_k([(0, torch.as_tensor(np.ascontiguousarray(scores)))], opts.k)
    harm_idx, harm_scores = top.harmful.indices.numpy(), top.harmful.scores.numpy()
    help_idx, help_scores = top.helpful.indices.numpy(), top.helpful.scores.numpy()
    counts = harmed_counts(top.harmful, n_train)

    def example(i: int) -> ExampleEntry:
        si, pct = attribution.self_influence.get(i, (None, None))
        return ExampleEntry(int(i), float(harm_[i]), int(counts[i]), si, pct, inputs.labels[i],
                            {c: inputs.groups[c][i] for c in inputs.groups})

    harmful = [example(i) for i in np.argsort(-harm_, kind="stable")[:opts.top] if harm_[i] > 0]
    suspects = [example(i) for i in np.lexsort((-harm_, -counts))[:opts.top] if counts[i] >= 2]
    old, new = compared.old, compared.new
    regressions = [RegressionEntry(int(j), compared.kinds[r], _plain_value(old["targets"][j]),
                                   _plain_value(old["predictions"][j]), _plain_value(new["predictions"][j]),
                                   float(old["losses"][j]), float(new["losses"][j]),
                                   _scored(harm_idx[r], harm_scores[r], n_train),
                                   _scored(help_idx[r], help_scores[r], n_train))
                   for r, j in enumerate(compared.chosen.tolist())]
    diagnostics = dict(attribution.diagnostics, seconds=clock.laps)
    settings = {**to_json_types(asdict(opts)), "group_by": list(inputs.groups), "task": type(task).__name__,
                "weight_decay": task.weight_decay, "class_names": inputs.class_names,
                "input_column": inputs.read["input_column"], "label_column": inputs.read["label_column"]}
    summary = _summary(compared, n_train, entries, checked)
    return Report(summary, entries, regressions, harmful, suspects, diagnostics, settings, _figures(entries, inputs),
                  verification=[asdict(v) for v in checked], fingerprints=fingerprints)


def _scored(indices: np.ndarray, scores: np.ndarray, n_train: int) -> list[dict]:
    return [{"train_index": int(i), "score": float(s), "loss_change": float(s) / n_train}
            for i, s in zip(indices, scores)]


def _summary(compared: _Comparison, n_train: int, entries: list[GroupEntry], checked: list[VerificationEntry]
             ) -> dict:
    from influence.report.readable import summary_headline

    old, new, kinds = compared.old, compared.new, compared.kinds
    classify = old["correct"] is not None
    s = {"n_train": n_train, "n_eval": len(old["losses"]), "n_regressions": len(kinds),
         "n_flipped": int((old["correct"] & ~new["correct"]).sum()) if classify else 0,
         "n_improved": int((~old["correct"] & new["correct"]).sum()) if classify else 0,
         "n_loss_rise": kinds.count("loss_rise"),
         "old_accuracy": float(old["correct"].mean()) if classify else None,
         "new_accuracy": float(new["correct"].mean()) if classify else None,
         "old_mean_loss": float(old["losses"].mean()), "new_mean_loss": float(new["losses"].mean())}
    worst = entries[0] if entries and entries[0].harm > 0 and kinds else None
    s["headline"] = summary_headline(s, worst, checked[0] if checked and worst is not None else None)
    return s


def _figures(entries: list[GroupEntry], inputs: _Inputs) -> list[Figure]:
    from influence.report.figures import column_comparison_chart, group_harm_chart

    shown = entries[:12]
    figures = [Figure("Harm of each group on the regressions (most harmful on top)",
                      group_harm_chart([f"{g.column}={g.value}" for g in shown], [g.harm for g in shown]))]
    explained = [g for g in entries if g.findings][:1]
    for g in explained:
        columns = [c for f in g.findings[:2] for c in f.columns][:2]
        if not columns or inputs.frame is None:
            continue
        frame = inputs.frame
        mask = np.fromiter((v == g.value for v in inputs.groups[g.column]), bool, len(frame))
        panels = [(c, frame[c][mask].dropna().to_numpy(), frame[c][~mask].dropna().to_numpy()) for c in columns
                  if c in frame]
        if panels:
            figures.append(Figure(f"{g.column} = {g.value} vs the rest of the training data",
                                  column_comparison_chart(f"{g.column} = {g.value} (red) vs the rest (gray)",
                                                          panels)))
    return figures


class _Clock:
    def __init__(self):
        self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 3)
        self.last = now

