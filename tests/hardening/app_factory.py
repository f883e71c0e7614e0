"""A tiny digits index for the app hardening tests, built in seconds, whose metadata values
and name hold HTML (`--factory tests.hardening.app_factory:tiny_digits`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import influence as inf

SCRIPT = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
SOURCES = [SCRIPT, IMG, "batch-<b>2</b>", "plain"]
TASK = dict(weight_decay=1e-2)


def tiny_digits() -> dict:
    return {"model": nn.Linear(64, 10), "task": inf.ClassificationTask(**TASK), "image_shape": (8, 8),
            "class_names": [str(c) for c in range(10)], "group_columns": ["source"], "name": f"{SCRIPT} tiny digits"}


def build(folder: Path) -> Path:
    """train/ and eval/ (datasets saved to disk), model.safetensors and index/ in `folder`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # multithreaded eigh crawls on a loaded 2-core machine
    try:
        return _build(folder)
    finally:
        torch.set_num_threads(threads)


def _build(folder: Path) -> Path:
    from safetensors.torch import save_file

    from influence.data import as_data
    from influence.demos.data import load_digits_dataset
    from influence.demos.training import train_adam

    train, test = load_digits_dataset(seed=0)
    train = train.select(range(400))
    train = train.remove_columns("source").add_column("source", [SOURCES[i % len(SOURCES)] for i in range(400)])
    test = test.select(range(120))
    X, y = as_data(train, "train").batch(range(len(train)))
    spec = tiny_digits()
    torch.manual_seed(0)
    model = spec["model"]
    train_adam(model, X, y, spec["task"], epochs=60, lr=0.05)
    folder.mkdir(parents=True, exist_ok=True)
    train.save_to_disk(str(folder / "train"))
    test.save_to_disk(str(folder / "eval"))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    inf.Attributor(model, train, task=spec["task"], method="exact", cache_dir=folder / "index", progress=False).fit()
    return folder


def linear():
    """The bare model (for `influence report --old-factory tests.hardening.app_factory:linear`)."""
    return nn.Linear(64, 10)
