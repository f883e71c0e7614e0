"""Leave-one-out agreement on multinomial logistic regression over scikit-learn digits.

Koh & Liang (2017, Fig. 2) setting: L2 0.01, the 10 test points with the highest loss,
for each the 100 training points with the largest |score|; each is removed and the model
retrained to convergence (float64 L-BFGS, warm start). Prints Pearson / Spearman of
predicted (score / n) vs actual test-loss change, per method, with wall times, and
appends the table to benchmarks/RESULTS.md.

    OMP_NUM_THREADS=2 python benchmarks/loo.py [--test-points 10] [--per-test 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import influence as inf  # noqa: E402
from _results import append_section, markdown_table  # noqa: E402
from influence.demos.data import load_digits_dataset  # noqa: E402
from influence.data import as_data  # noqa: E402
from influence.model import FunctionalModel  # noqa: E402
from influence.training import load_flat, minimize  # noqa: E402
from influence.validate import leave_one_out  # noqa: E402

BARS = {"exact": 0.99, "cg": 0.99, "lissa": 0.98}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test-points", type=int, default=10)
    parser.add_argument("--per-test", type=int, default=100)
    parser.add_argument("--methods", default="exact,cg,lissa,identity")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    model, task, (X, y), query, accuracy = digits_logreg(args.test_points)
    fm = FunctionalModel(model)
    print(f"digits logistic regression: n_train={len(y)}, p={fm.p}, test accuracy {accuracy:.3f}; "
          f"{args.test_points} worst test points, top {args.per_test} |score| each")

    cache: dict[int, torch.Tensor] = {}
    rows = []
    for name in args.methods.split(","):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", inf.InfluenceWarning)
            attr = inf.Attributor(model, (X, y), task=task, method=name, progress=False).fit()
            scores = attr.scores(query)
        seconds = time.perf_counter() - start
        idx = scores.abs().argsort(dim=1, descending=True)[:, : args.per_test]
        retrain_start = time.perf_counter()
        result = leave_one_out(attr, query, idx, retrain_cache=cache, progress=True)
        retrain = time.perf_counter() - retrain_start
        bar = BARS.get(name)
        verdict = "" if bar is None else ("pass" if min(result.pearson, result.spearman) >= bar else "FAIL")
        d = attr.diagnostics
        solve = d.get("last_solve") or {}
        note = f"{solve['iterations']} it" if "iterations" in solve else "direct"
        rows.append([name, f"{result.pearson:.4f}", f"{result.spearman:.4f}", f"{seconds:.2f}", note,
                     f"≥ {bar}" if bar else "—", verdict + (" (warned)" if caught else "")])
        print(f"{name:9s} pearson {result.pearson:.4f}  spearman {result.spearman:.4f}  "
              f"fit+score {seconds:.2f}s ({note})  retrains {retrain:.1f}s  {verdict}")
    header = ["method", "Pearson R", "Spearman R", "fit + 10 queries (s)", "solver", "bar", "result"]
    table = markdown_table(header, rows)
    print("\n".join(table))
    if not args.no_record:
        append_section("LOO agreement, digits logistic regression (benchmarks/loo.py)", [
            f"n_train={len(y)}, p={fm.p}, L2=0.01, {args.test_points} highest-loss test points × "
            f"{args.per_test} largest-|score| removals, {len(cache)} distinct float64 L-BFGS retrains "
            "(warm start, ‖∇‖∞ ≤ 1e-10); default damping (1e-3 × mean eigenvalue).", "", *table])


def digits_logreg(test_points: int):
    """The benchmark's problem: multinomial logistic regression on digits (float64, L2 0.01)
    at its optimum. Returns (model, task, (X, y), (X_q, y_q), test accuracy) with the
    `test_points` highest-loss test points as the query."""
    train, test = load_digits_dataset(seed=0)
    X, y = as_data(train, "train").batch(range(len(train)))
    Xt, yt = as_data(test, "test").batch(range(len(test)))
    X, Xt = X.double(), Xt.double()
    task = inf.ClassificationTask(weight_decay=0.01)
    model = torch.nn.Linear(64, 10).double()
    fm = FunctionalModel(model)
    load_flat(model, fm, minimize(fm, task, X, y, fm.theta, tol=1e-12))
    model.eval()
    with torch.no_grad():
        outputs = model(Xt)
    worst = task.loss(outputs, yt).argsort(descending=True)[:test_points]
    accuracy = float((outputs.argmax(1) == yt).double().mean())
    return model, task, (X, y), (Xt[worst], yt[worst]), accuracy


if __name__ == "__main__":
    main()
