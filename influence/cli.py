"""The `influence` command line.

    influence demo [--method cg] [--worst 4] [--k 5] [--out influence-demo]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _demo(args: argparse.Namespace) -> int:
    import torch

    import influence as inf
    from influence.data import as_data
    from influence.demo_data import load_digits_dataset
    from influence.plots import save_trace_grid
    from influence.training import train_adam

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    train, test = load_digits_dataset(seed=args.seed)
    X, y = as_data(train, "train").batch(range(len(train)))
    Xt, yt = as_data(test, "test").batch(range(len(test)))
    print(f"digits: {len(train)} training and {len(test)} test images (offline, scikit-learn)")

    task = inf.ClassificationTask(weight_decay=1e-3)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    train_adam(model, X, y, task, epochs=args.epochs, lr=0.02, seed=args.seed)
    with torch.no_grad():
        logits = model(Xt)
        losses = torch.nn.functional.cross_entropy(logits, yt, reduction="none")
    accuracy = float((logits.argmax(1) == yt).float().mean())
    print(f"model: MLP 64-32-10, test accuracy {accuracy:.3f}")

    attr = inf.Attributor(model, train, task=task, method=args.method).fit()
    d = attr.diagnostics
    print(f"fitted method={d['method']} over {d['n_params']} parameters; damping {d['damping']:.3g} "
          f"({d['damping_source']})")

    worst = losses.argsort(descending=True)[: args.worst].tolist()
    queried = test.select(worst)
    top = attr.top_k(queried, k=args.k)
    print(f"\nsolver: {_solver_line(attr.diagnostics)}")
    print("score > 0: helpful (removing it would raise the test loss); score < 0: harmful\n")
    sources = list(train["source"])
    labels = list(train["label"])
    for row, j in enumerate(worst):
        predicted = int(logits[j].argmax())
        print(f"test #{j}: label {int(yt[j])}, predicted {predicted} (loss {float(losses[j]):.2f})")
        for kind, ranking in (("harmful", top.harmful), ("helpful", top.helpful)):
            items = [f"#{i} (label {labels[i]}, {sources[i]}, {s:+.3g})"
                     for i, s in zip(ranking.indices[row].tolist(), ranking.scores[row].tolist())]
            print(f"  most {kind}: " + ", ".join(items))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "trace_grid.png")
    save_trace_grid(path, queried, train, top, predicted=[int(logits[j].argmax()) for j in worst],
                    image_shape=(8, 8))
    print(f"\nwrote {path}  ({time.perf_counter() - started:.1f} s in all)")
    return 0


def _solver_line(d: dict) -> str:
    if "iterations" not in d:
        return "direct (no iterative solve)"
    state = "converged" if d.get("converged") else "NOT converged"
    return f"{d['solver']} {state} in {d['iterations']} iterations, relative residual {d['residual']:.2g}"


def main(argv: list[str] | None = None) -> int:
    from influence.methods import METHODS

    parser = argparse.ArgumentParser(prog="influence", description="Which training data caused this prediction?")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small model on the bundled digits and trace its worst predictions")
    demo.add_argument("--method", default="cg", choices=sorted(METHODS), help="attribution method (default: cg)")
    demo.add_argument("--worst", type=int, default=4, help="how many of the worst test predictions to trace")
    demo.add_argument("--k", type=int, default=5, help="training examples shown per test example and kind")
    demo.add_argument("--epochs", type=int, default=500, help="full-batch training epochs")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="influence-demo", help="folder for the PNG grid")
    args = parser.parse_args(argv)
    try:
        return {"demo": _demo}[args.command](args)
    except Exception as error:  # noqa: BLE001 — a CLI turns our errors into one clear line
        from influence.errors import InfluenceError

        if isinstance(error, InfluenceError):
            print(f"influence: error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
