"""The digits trace demo (`influence demo --dataset digits --corruption none`) and the one
printer of traced predictions both digits demos use.

Sign convention: score > 0 helpful (removing the training image would raise the test loss),
< 0 harmful; the printed effect is score / n_train, the estimated change of the test loss.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch

from influence.results import Ranking, TopK

SIGN_LINE = ("effect = estimated change of the test loss if the training image were removed "
             "(score / n_train): < 0 harmful, > 0 helpful\n")


def print_traces(titles: Sequence[str], top: TopK, train, n_train: int, k: int) -> None:
    """One block per traced prediction: its title, then its k most harmful and most helpful
    training examples with label, source and effect."""
    sources, labels = train["source"], train["label"]
    print(SIGN_LINE)
    for row, title in enumerate(titles):
        print(title)
        for kind, ranking in (("harmful", top.harmful), ("helpful", top.helpful)):
            items = [f"#{i} (label {labels[i]}, {sources[i]}, {s / n_train:+.3g})"
                     for i, s in zip(ranking.indices[row, :k].tolist(), ranking.scores[row, :k].tolist())]
            print(f"  most {kind}: " + ", ".join(items))


def report_traces(report, scenario, worst: int, k: int, out: str) -> None:
    """Print and draw (trace_grid.png) the worst regressions of a digits report."""
    from influence.plots import save_trace_grid

    rows = sorted(report.regressions, key=lambda r: r.old_loss - r.new_loss)[:worst]
    if not rows:
        return

    def ranking(kind: str) -> Ranking:
        items = [getattr(r, kind)[:k] for r in rows]
        return Ranking(torch.tensor([[h["train_index"] for h in row] for row in items]),
                       torch.tensor([[h["score"] for h in row] for row in items]))

    top = TopK(helpful=ranking("helpful"), harmful=ranking("harmful"))
    print_traces([f"eval #{r.eval_index}: label {r.label}, v1 predicted {r.old_prediction}, v2 predicts "
                  f"{r.new_prediction} (loss {r.old_loss:.2f} → {r.new_loss:.2f})" for r in rows],
                 top, scenario.new_train, len(scenario.new_train), k)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "trace_grid.png")
    save_trace_grid(path, scenario.eval.select([r.eval_index for r in rows]), scenario.new_train, top,
                    predicted=[r.new_prediction for r in rows], image_shape=(8, 8))
    print(f"wrote {path}")


def trace_demo(method: str | None, epochs: int, seed: int, worst: int, k: int, out: str) -> int:
    """Train the digits MLP, attribute its worst test predictions, print them, draw trace_grid.png."""
    import influence as inf
    from influence.data import as_data
    from influence.demos.data import load_digits_dataset
    from influence.demos.training import train_adam
    from influence.plots import save_trace_grid

    started = time.perf_counter()
    torch.manual_seed(seed)
    train, test = load_digits_dataset(seed=seed)
    X, y = as_data(train, "train").batch(range(len(train)))
    Xt, yt = as_data(test, "test").batch(range(len(test)))
    print(f"digits: {len(train)} training and {len(test)} test images (offline, scikit-learn)")
    task = inf.ClassificationTask(weight_decay=1e-3)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    train_adam(model, X, y, task, epochs=epochs, lr=0.02, seed=seed)
    with torch.no_grad():
        logits = model(Xt)
        losses = torch.nn.functional.cross_entropy(logits, yt, reduction="none")
    print(f"model: MLP 64-32-10, test accuracy {float((logits.argmax(1) == yt).float().mean()):.3f}")
    attr = inf.Attributor(model, train, task=task, method=method or "cg").fit()
    d = attr.diagnostics
    print(f"fitted method={d['method']} over {d['n_params']} parameters; damping {d['damping']:.3g} "
          f"({d['damping_source']})")
    rows = losses.argsort(descending=True)[:worst].tolist()
    queried = test.select(rows)
    top = attr.top_k(queried, k=k)
    print(f"\nsolver: {solver_line(attr.diagnostics)}")
    print_traces([f"test #{j}: label {int(yt[j])}, predicted {int(logits[j].argmax())} (loss {float(losses[j]):.2f})"
                  for j in rows], top, train, len(train), k)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "trace_grid.png")
    save_trace_grid(path, queried, train, top, predicted=[int(logits[j].argmax()) for j in rows], image_shape=(8, 8))
    print(f"\nwrote {path}  ({time.perf_counter() - started:.1f} s in all)")
    return 0


def solver_line(d: dict) -> str:
    """How the attribution solved `(H + λI)⁻¹`, from its diagnostics (the last solve's, when kept apart)."""
    d = d.get("last_solve") or d
    if "iterations" not in d:
        return "direct (no iterative solve)"
    state = "converged" if d.get("converged") else "NOT converged"
    return f"{d['solver']} {state} in {d['iterations']} iterations, relative residual {d['residual']:.2g}"
