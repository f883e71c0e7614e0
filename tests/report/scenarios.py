"""Small tabular scenarios for the report tests: a clean v1 and a v2 trained after one source
was corrupted, both logistic regressions solved to their optimum in float64."""

from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch

import influence as inf
from influence.demos.data import TabularEncoder, corrupt_rows, split_into_sources
from influence.model import FunctionalModel
from influence.training import load_flat, minimize

NUMERIC = ["x1", "x2", "x3"]
CATEGORICAL = ["color"]
WEIGHT_DECAY = 1e-3


def make_frame(n: int, seed: int) -> pd.DataFrame:
    """Three numeric columns on different scales, one categorical column, a binary label."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(0, 1, n), "x2": rng.normal(50, 10, n), "x3": rng.uniform(0, 10, n),
                          "color": rng.choice(["red", "green", "blue"], n)})
    logit = 2.0 * frame.x1 - 1.5 * (frame.x2 - 50) / 10 + 0.3 * frame.x3 - 1.5 + (frame.color == "red") * 1.0
    frame["label"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return frame


def to_dataset(frame: pd.DataFrame, encoder: TabularEncoder, extra: dict | None = None):
    import datasets

    data = {"input": list(encoder.transform(frame)), "label": frame["label"].to_numpy()}
    data.update(extra or {})
    for c in frame.columns:
        if c != "label":
            data[c] = frame[c].astype(object).where(frame[c].notna(), None).tolist()
    return datasets.Dataset.from_dict(data)


def train_logreg(ds, dim: int) -> torch.nn.Linear:
    X = torch.tensor(np.stack(ds["input"]), dtype=torch.float64)
    y = torch.tensor(ds["label"])
    torch.manual_seed(0)
    model = torch.nn.Linear(dim, 2).double()
    fm = FunctionalModel(model)
    load_flat(model, fm, minimize(fm, inf.ClassificationTask(weight_decay=WEIGHT_DECAY), X, y, fm.theta, tol=1e-9))
    return model.eval()


def build(kind: str, source: str = "s3", columns=None, n: int = 1500, n_sources: int = 6, seed: int = 0,
          rename: dict | None = None):
    """(old_model, new_model, new_train, eval, info) with `source` corrupted by `kind`."""
    frame = make_frame(n, seed)
    sources = split_into_sources(n, n_sources, prefix="s")
    sources = np.array([f"s{int(s[1:]) - 1}" for s in sources])  # s0..s5
    encoder = TabularEncoder(NUMERIC, CATEGORICAL).fit(frame)
    rows = np.flatnonzero(sources == source)
    corrupted = frame if kind == "none" else corrupt_rows(frame, rows, kind, columns, seed=seed)
    if rename:
        sources = np.array([rename.get(s, s) for s in sources])
    old_train = to_dataset(frame, encoder, {"source": sources.tolist()})
    new_train = to_dataset(corrupted, encoder, {"source": sources.tolist()})
    eval_set = to_dataset(make_frame(600, seed + 1), encoder)
    old, new = train_logreg(old_train, encoder.dim), train_logreg(new_train, encoder.dim)
    return old, new, new_train, eval_set, encoder
