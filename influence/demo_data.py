"""Offline demo data: every loader reads files shipped inside installed packages.

Nothing here touches the network.
"""

from __future__ import annotations

import numpy as np


def load_digits_dataset(test_fraction: float = 0.25, seed: int = 0):
    """scikit-learn's bundled 8×8 digits (1,797 images) as two `datasets.Dataset`s.

    Columns: `input` (64 floats in [0, 1], the image row-major), `label` (0–9), `source`
    (a synthetic collection batch, "batch-0".."batch-9", by position in the original file)
    and `index` (row in the original file). Returns `(train, test)`, split at random with
    `seed`.
    """
    import datasets
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = len(digits.target)
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    table = {
        "input": (digits.data / 16.0).astype(np.float32),
        "label": digits.target.astype(np.int64),
        "source": np.array([f"batch-{i * 10 // n}" for i in range(n)]),
        "index": np.arange(n),
    }

    def subset(rows: np.ndarray):
        return datasets.Dataset.from_dict({k: v[rows] for k, v in table.items()})

    return subset(np.sort(order[n_test:])), subset(np.sort(order[:n_test]))
