"""Tiny in-memory setups for the app tests: texts and table rows whose values contain HTML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

import influence as inf
from influence_app.setup import Setup
from influence.data import as_data
from influence.demos.training import train_adam

SCRIPT = "<script>alert(1)</script>"
BOLD = "<b>x</b>"
VOCABULARY = ["great", "fun", "love", "awful", "bad", "boring", "script", "alert"]


def bag_of_words(text: str) -> np.ndarray:
    words = text.lower().replace("<", " ").replace(">", " ").replace("(", " ").split()
    return np.array([sum(w.startswith(v) for w in words) for v in VOCABULARY], dtype=np.float32)


def _fit(train, model: nn.Module) -> inf.Attributor:
    task = inf.ClassificationTask(weight_decay=1e-2)
    X, y = as_data(train, "train").batch(range(len(train)))
    torch.manual_seed(0)
    train_adam(model, X, y, task, epochs=200, lr=0.05)
    return inf.Attributor(model, train, task=task, method="exact", progress=False).fit()


def text_setup(folder: Path) -> Setup:
    """Reviews with HTML in the text and in the `critic` column; eval row 0 is a confident mistake."""
    import datasets

    positive = ["great fun", "love it great", "fun fun", "great love", "love", "great"]
    negative = ["awful", "bad boring", "boring", "awful bad", "bad", SCRIPT]
    texts, labels = [], []
    for r in range(4):
        texts += [f"{t} {SCRIPT if r == 0 and i == 0 else ''}".strip() for i, t in enumerate(positive)] + negative
        labels += [1] * len(positive) + [0] * len(negative)
    critics = [[BOLD, SCRIPT, "plain"][i % 3] for i in range(len(texts))]

    def table(texts, labels, critics):
        return datasets.Dataset.from_dict({"input": [bag_of_words(t).tolist() for t in texts], "label": labels,
                                           "text": texts, "critic": critics})

    train = table(texts, labels, critics)
    test = table([f"{SCRIPT} great love fun", "boring bad", "great", f"{BOLD} awful"], [0, 0, 1, 0],
                 [SCRIPT, BOLD, "plain", BOLD])
    attr = _fit(train, nn.Linear(len(VOCABULARY), 2))
    return Setup(name=f"{BOLD} tiny reviews", model=attr.model, attributor=attr, train=train, eval=test,
                 modality="text", class_names=["rotten", "fresh"], flags_path=folder / "flags.json",
                 encode=bag_of_words, text_column="text", group_columns=["critic"], notes=f"notes with {SCRIPT}")


def table_setup(folder: Path) -> Setup:
    """Rows with a categorical column holding HTML; label = (size > 0) for color "red"."""
    import datasets

    rng = np.random.default_rng(0)
    colors = [["red", BOLD, SCRIPT][i % 3] for i in range(60)]
    sizes = rng.normal(size=60).round(2)
    labels = [int(s > 0) for s in sizes]

    def encode(row: dict) -> np.ndarray:
        color = str(row["color"])
        return np.array([float(row["size"]), color == "red", color == BOLD, color == SCRIPT], dtype=np.float32)

    def table(colors, sizes, labels):
        rows = [{"color": c, "size": float(s)} for c, s in zip(colors, sizes)]
        return datasets.Dataset.from_dict({"input": [encode(r).tolist() for r in rows], "label": labels,
                                           "color": list(colors), "size": [float(s) for s in sizes]})

    train = table(colors, sizes, labels)
    test = table([BOLD, "red", SCRIPT], [0.5, -1.0, 2.0], [0, 0, 1])
    attr = _fit(train, nn.Linear(4, 2))
    return Setup(name="tiny rows", model=attr.model, attributor=attr, train=train, eval=test, modality="table",
                 class_names=["small", "big"], flags_path=folder / "flags.json", encode=encode,
                 row_columns=["color", "size"], group_columns=["color"])
