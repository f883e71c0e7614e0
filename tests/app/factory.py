"""Model factory of the small digits index the app tests open (`--factory tests.app.factory:small_digits`)."""

from torch import nn

import influence as inf

HIDDEN = 8


def small_digits() -> dict:
    return {"model": nn.Sequential(nn.Linear(64, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 10)),
            "task": inf.ClassificationTask(weight_decay=1e-3), "image_shape": (8, 8),
            "class_names": [str(c) for c in range(10)], "group_columns": ["source"], "name": "digits (test index)"}


def bare_small_digits():
    """The same network without its task: the index was built with weight_decay=1e-3."""
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 10))


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def named_digits() -> dict:
    """A logistic regression whose data labels are class names (strings), mapped by `class_names`."""
    return {"model": nn.Linear(64, 10), "task": inf.ClassificationTask(weight_decay=1e-2), "class_names": NAMES,
            "image_shape": (8, 8)}
