"""Every adapter's sign agrees with ours on a small convex problem.

Logistic regression on 400 digits (float64, L2 0.01, trained to the optimum); 12 test
points. For each adapter, at a setting where its library returns finite scores
(`CHECK_SETTINGS`, else its defaults), the mean over test rows of the Pearson correlation
between its scores and our `exact` scores must be clearly positive, for the test loss and
for the margin measurement; its self-influence must correlate positively with ours.
A flipped sign gives a clearly negative correlation, so this catches a wrong orientation
(a peer that is merely less accurate still passes).

    benchmarks/peers/.venv/bin/python benchmarks/peers/test_adapters.py      # or: -m pytest
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import torch  # noqa: E402

import influence as inf  # noqa: E402
from adapters import Problem, Unsupported, peer_adapters  # noqa: E402
from adapters.base import cross_entropy_margin  # noqa: E402
from adapters.ours import Ours  # noqa: E402
from influence.data import as_data  # noqa: E402
from influence.demos.data import load_digits_dataset  # noqa: E402
from influence.model import FunctionalModel  # noqa: E402
from influence.training import load_flat, minimize  # noqa: E402

# Settings where the defaults give no finite scores (a singular Hessian with no damping) or
# take minutes; the sign does not depend on them.
CHECK_SETTINGS = {
    ("TRAK", "TRAKer"): {"proj_dim": 256, "lambda_reg": 1e-2, "use_half_precision": False},
    ("dattri", "IFAttributorExplicit"): {"regularization": 1e-3},
    ("dattri", "IFAttributorDataInf"): {"regularization": 1e-3},
    ("dattri", "IFAttributorArnoldi"): {"proj_dim": 50, "max_iter": 100, "regularization": 1e-3},
    ("dattri", "IFAttributorLiSSA"): {"damping": 1e-2, "recursion_depth": 200, "batch_size": 128},
    ("dattri", "TRAKAttributor"): {"proj_dim": 256, "regularization": 1e-2},
}
MIN_ROW_CORRELATION = 0.2


def small_problem(measurement: str) -> tuple[Problem, torch.Tensor, torch.Tensor]:
    train, test = load_digits_dataset(seed=0)
    X, y = as_data(train, "train").batch(range(400))
    Xt, yt = as_data(test, "test").batch(range(12))
    X, Xt = X.double(), Xt.double()
    task = inf.ClassificationTask(weight_decay=0.01)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10).double()
    fm = FunctionalModel(model)
    load_flat(model, fm, minimize(fm, task, X, y, fm.theta, tol=1e-12))
    m = task.loss if measurement == "loss" else cross_entropy_margin
    return Problem(model.eval(), X, y, task.loss, m, measurement, 0.01, 10), Xt, yt


def row_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of the Pearson correlation (each peer may scale each test row differently)."""
    values = [torch.corrcoef(torch.stack([a[j], b[j]]))[0, 1] for j in range(a.shape[0])]
    return float(torch.stack(values).mean())


def check(cls, measurement: str) -> tuple[float, float | None]:
    problem, Xt, yt = small_problem(measurement)
    ours = Ours(problem, method="exact")
    ours.fit()
    adapter = cls(problem, **CHECK_SETTINGS.get((cls.tool, cls.method), {}))
    try:
        adapter.fit()
        r = row_correlation(adapter.scores(Xt, yt).double(), ours.scores(Xt, yt))
        r_self = None
        if measurement == "loss":
            try:
                s = adapter.self_influence().double()
                r_self = float(torch.corrcoef(torch.stack([s, ours.self_influence()]))[0, 1])
            except (Unsupported, NotImplementedError):
                pass
        return r, r_self
    finally:
        adapter.close()


def test_signs() -> None:
    classes, failed = peer_adapters()
    assert not failed, f"peers failed to import: {failed}"
    problems = []
    for cls in classes:
        for measurement in ("loss", "margin"):
            r, r_self = check(cls, measurement)
            ok = r > MIN_ROW_CORRELATION and (r_self is None or r_self > MIN_ROW_CORRELATION)
            self_text = "—" if r_self is None else f"{r_self:+.3f}"
            print(f"{cls.tool:12s} {cls.method:26s} {measurement:6s} r={r:+.3f} self r={self_text}  "
                  f"{'ok' if ok else 'WRONG SIGN?'}", flush=True)
            if not ok:
                problems.append(f"{cls.tool} {cls.method} ({measurement}): r={r:.3f}, self r={self_text}")
    assert not problems, "sign disagrees with ours: " + "; ".join(problems)


if __name__ == "__main__":
    torch.set_num_threads(1)
    test_signs()
    print("all adapters agree with our sign convention")
