"""Finding flipped labels on scikit-learn digits: self-influence vs loss vs cleanlab vs random.

10% or 30% of the 1,348 training labels are flipped to another class at random; a logistic
regression (float64 L-BFGS to the optimum, L2 0.01) and an MLP 64-32-10 (full-batch Adam,
L2 1e-3) are trained on the noisy labels. Each ranking orders the training set by
suspicion — self-influence `∇ℓᵀ(H + λI)⁻¹∇ℓ` of every method at its defaults, the training
loss, cleanlab's label-quality score (out-of-fold probabilities from 5-fold retraining of
the same model; `find_label_issues` gives the flagged count), and a random order — and is
scored by ROC AUC and by the fraction of flipped labels found after checking the top
10/20/30% of the training set. Appends the tables to benchmarks/RESULTS.md.

    OMP_NUM_THREADS=1 python benchmarks/mislabel.py [--methods exact,cg,...] [--noise 0.1,0.3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import influence as inf  # noqa: E402
from _results import append_section, markdown_table  # noqa: E402
from influence.data import as_data  # noqa: E402
from influence.demos.data import load_digits_dataset  # noqa: E402
from influence.model import FunctionalModel  # noqa: E402
from influence.demos.training import train_adam  # noqa: E402
from influence.training import load_flat, minimize  # noqa: E402

METHODS = "exact,cg,arnoldi,ekfac,trak,identity"
CHECKED = (0.1, 0.2, 0.3)


def flip_labels(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of y with round(fraction·n) labels moved to a different random class, and the flip mask."""
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    rows = torch.randperm(n, generator=gen)[: round(fraction * n)]
    noisy = y.clone()
    noisy[rows] = (y[rows] + torch.randint(1, 10, (len(rows),), generator=gen)) % 10
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[rows] = True
    return noisy, flipped


def train_logreg(X, y, task, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(64, 10).double()
    fm = FunctionalModel(model)
    load_flat(model, fm, minimize(fm, task, X, y, fm.theta, tol=1e-9, max_iter=1000))
    return model.eval()


def train_mlp(X, y, task, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)).double()
    return train_adam(model, X, y, task, epochs=500, lr=1e-2, seed=seed)


MODELS = {"logreg": (train_logreg, 0.01), "mlp": (train_mlp, 1e-3)}


def evaluate(suspicion: np.ndarray, flipped: np.ndarray) -> list[float]:
    """ROC AUC, then the fraction of flipped labels among the top 10/20/30% most suspicious."""
    order = np.argsort(-suspicion, kind="stable")
    found = [flipped[order[: round(c * len(order))]].sum() / flipped.sum() for c in CHECKED]
    return [roc_auc_score(flipped, suspicion), *found]


def cleanlab_ranking(train_fn, X, y, task, folds: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predicted probabilities of the same model → (suspicion = 1 − label quality,
    the boolean mask of `find_label_issues`)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    n = len(y)
    fold = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) % folds
    probs = torch.zeros(n, 10, dtype=torch.float64)
    for f in range(folds):
        model = train_fn(X[fold != f], y[fold != f], task, seed)
        with torch.no_grad():
            probs[fold == f] = torch.softmax(model(X[fold == f]), dim=1)
    labels, pred = y.numpy(), probs.numpy()
    return 1.0 - get_label_quality_scores(labels, pred), find_label_issues(labels, pred)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--models", default="logreg,mlp")
    parser.add_argument("--noise", default="0.1,0.3")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    train, _ = load_digits_dataset(seed=0)
    X, y_clean = as_data(train, "train").batch(range(len(train)))
    X = X.double()
    tables = []
    for noise in (float(v) for v in args.noise.split(",")):
        y, flipped = flip_labels(y_clean, noise, seed=1)
        truth = flipped.numpy()
        for model_name in args.models.split(","):
            train_fn, weight_decay = MODELS[model_name]
            task = inf.ClassificationTask(weight_decay=weight_decay)
            model = train_fn(X, y, task)
            with torch.no_grad():
                loss = task.loss(model(X), y)
            rows = []
            for method in args.methods.split(","):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", inf.InfluenceWarning)
                    attr = inf.Attributor(model, (X, y), task=task, method=method, progress=False).fit()
                    suspicion = attr.self_influence().cpu().numpy()
                rows.append([f"self-influence: {method}", *evaluate(suspicion, truth), time.perf_counter() - start])
            rows.append(["training loss", *evaluate(loss.numpy(), truth), 0.0])
            try:
                start = time.perf_counter()
                suspicion, flagged = cleanlab_ranking(train_fn, X, y, task)
                precision = float(truth[flagged].mean()) if flagged.any() else float("nan")
                rows.append([f"cleanlab ({int(flagged.sum())} flagged, precision {precision:.2f})",
                             *evaluate(suspicion, truth),
                             time.perf_counter() - start])
            except ImportError:
                rows.append(["cleanlab (not installed)", *[float("nan")] * 4, 0.0])
            rng = np.random.default_rng(0)
            rows.append(["random", *evaluate(rng.random(len(truth)), truth), 0.0])
            title = f"{model_name}, {noise:.0%} flipped ({int(truth.sum())} of {len(truth)})"
            table = markdown_table(["ranking", "AUC", "found @10%", "found @20%", "found @30%", "time (s)"],
                                   [[r[0], *(f"{v:.3f}" for v in r[1:5]), f"{r[5]:.1f}"] for r in rows])
            print(f"\n### {title}\n" + "\n".join(table), flush=True)
            tables += [f"**{title}**", "", *table, ""]
    if not args.no_record:
        append_section("Mislabel detection, digits (benchmarks/mislabel.py)", [
            "Labels flipped to a random other class (seed 1). logreg: float64 L-BFGS optimum, L2 0.01; mlp: "
            "64-32-10 tanh, full-batch Adam 500 epochs, L2 1e-3. Rankings by self-influence (method defaults, "
            "loss measurement), training loss, cleanlab label-quality (5-fold out-of-fold probabilities of the "
            "same model), random. 'found @x%' = fraction of the flipped labels among the top x% of the ranking.",
            "", *tables])


if __name__ == "__main__":
    main()
