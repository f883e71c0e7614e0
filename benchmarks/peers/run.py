"""Side by side with the peers: Kronfluence, TRAK, Captum, dattri and cleanlab on our benchmarks.

Tasks (each reuses a project benchmark's setting and cached ground truth; see tasks.py):
LOO agreement on digits logistic regression, LDS on the digits MLP, mislabel detection at
10% and 30% noise, and wall time of fit + 100 queries and of 1 more query on MNIST. Every
peer method runs at its library's defaults and, unless --no-sweep, at the best setting of
a small sweep; failures and time-outs are rows, not omissions. Appends one Markdown
section per task to benchmarks/RESULTS.md (via benchmarks/_results.py) and prints the
summary table used in the README.

Run in the peers' environment (benchmarks/peers/setup.sh):

    benchmarks/peers/.venv/bin/python benchmarks/peers/run.py --quick      # ~10 min
    benchmarks/peers/.venv/bin/python benchmarks/peers/run.py              # full, < 60 min on 1 core
    benchmarks/peers/.venv/bin/python benchmarks/peers/run.py --tasks lds --peers kronfluence,trak
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy / torch load their thread pools
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")      # the peers' progress bars
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import tasks  # noqa: E402  (puts the repository root and benchmarks/ on sys.path)
from _results import append_section, markdown_table  # noqa: E402
from adapters import peer_adapters  # noqa: E402
from harness import fmt, fmt_time  # noqa: E402

import lds as _lds_benchmark  # noqa: E402  (benchmarks/lds.py)

TASKS = ("loo", "lds", "lds-mnist5k", "mislabel", "speed")
DEFAULT_TASKS = ("loo", "lds", "mislabel", "speed")  # lds-mnist5k: opt-in (~20 min more; needs lds.py's cache)
PEERS = ("kronfluence", "trak", "captum", "dattri")
# Adapters also timed at the large speed size (the others need a pass over the training data
# per query, or an explicit p×p matrix, and would not finish in the time budget).
LARGE_SPEED = ("influence-debugger:auto", "influence-debugger:cg", "influence-debugger:trak", "influence-debugger:trak-countsketch",
               "influence-debugger:ekfac", "influence-debugger:arnoldi", "influence-debugger:identity", "Kronfluence:EK-FAC", "TRAK:TRAKer", "Captum:TracInCPFastRandProj",
               "dattri:TRAKAttributor")


class MarginTask(_lds_benchmark.MarginTask):
    """benchmarks/lds.py's margin task. Defined here so that its name is `__main__.MarginTask`,
    the name benchmarks/lds.py (run as a script) writes into its ground-truth cache key: the
    cached retrains are then reused instead of recomputed."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="defaults only (no sweeps), LOO 5×50, mislabel logreg only, speed at 5,000 only")
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                        help=f"comma-separated subset of {TASKS} (default: {','.join(DEFAULT_TASKS)})")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {PEERS}")
    parser.add_argument("--no-sweep", action="store_true", help="peers at their defaults only")
    parser.add_argument("--speed-sizes", default=None, help="training-set sizes for the speed task (default "
                        "5000,50000; --quick: 5000)")
    parser.add_argument("--limit", type=float, default=None, help="seconds per config on the digits tasks "
                        "(default 60)")
    parser.add_argument("--speed-limit", type=float, default=None, help="seconds per config on the speed task "
                        "(default 300; --quick 120)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-gb", type=float, default=10.0,
                        help="address-space limit of this process (a peer that needs more fails with "
                             "out-of-memory instead of pushing the shared machine into the OOM killer)")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--json", default=str(tasks.PEER_CACHE / "last-run.json"),
                        help="where to write every run (and the Markdown sections) as JSON")
    parser.add_argument("--record-from", metavar="JSON[,JSON]", default=None,
                        help="append the sections of earlier runs (their --json files) to RESULTS.md, print the "
                             "summary table and exit")
    parser.add_argument("--summary-from", metavar="JSON[,JSON]", default=None,
                        help="print the summary table of earlier runs and exit")
    parser.add_argument("--mislabel-problem", default=None, metavar="MODEL:NOISE",
                        help="only this mislabel problem, e.g. mlp:0.3 (the subprocess runner uses it to give each "
                             "problem a fresh process)")
    parser.add_argument("--in-process", action="store_true",
                        help="run every task in this process (default: one subprocess per task, so that memory "
                             "a peer leaks does not pile up across tasks)")
    args = parser.parse_args()
    if args.record_from or args.summary_from:
        files = (args.record_from or args.summary_from).split(",")
        data_list = [json.loads(Path(f).read_text()) for f in files]
        if args.record_from:
            for f, data in zip(files, data_list):
                for section in data["sections"]:
                    append_section(section["title"], section["lines"])
                print(f"appended {len(data['sections'])} section(s) from {f} (run of {data['started']})")
        print("\n".join(summary_table(data_list)))
        return

    torch.set_num_threads(args.threads)
    if args.memory_gb:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    settings = tasks.Settings(quick=args.quick, tuned=not (args.no_sweep or args.quick))
    if args.quick:
        settings.loo_test_points, settings.loo_per_test = 5, 50
        settings.mislabel_models = ("logreg",)
        settings.speed_limit = 120.0
        settings.speed_sizes = (5000,)
    else:
        settings.speed_sizes = (5000, 50000)
    if args.mislabel_problem:
        model_name, noise = args.mislabel_problem.split(":")
        settings.mislabel_models, settings.noise = (model_name,), (float(noise),)
    if args.speed_sizes:
        settings.speed_sizes = tuple(int(v) for v in args.speed_sizes.split(","))
    settings.limit = args.limit or settings.limit
    settings.speed_limit = args.speed_limit or settings.speed_limit
    settings.speed_large_methods = LARGE_SPEED

    chosen = [t for t in args.tasks.split(",") if t]
    unknown = set(chosen) - set(TASKS)
    if unknown:
        parser.error(f"unknown task(s) {sorted(unknown)}; choose from {TASKS}")
    if (len(chosen) > 1 or "mislabel" in chosen) and not args.in_process:
        run_tasks_in_subprocesses(args, chosen)
        return
    classes, failed = peer_adapters()
    wanted = {p.strip().lower() for p in args.peers.split(",") if p.strip()}
    classes = [c for c in classes if c.tool.lower() in wanted]
    for name, error in failed.items():
        print(f"peer {name} could not be imported and is reported as failed: {error}")

    sections, started, stamp = [], time.perf_counter(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runners = {
        "loo": lambda: tasks.loo_task(settings, classes),
        "lds": lambda: tasks.lds_task(settings, classes, MarginTask),
        "lds-mnist5k": lambda: tasks.lds_task(settings, classes, MarginTask, "mnist5k"),
        "mislabel": lambda: tasks.mislabel_task(settings, classes),
        "speed": lambda: tasks.speed_task(settings, classes),
    }
    for name in chosen:
        start, load_before = time.perf_counter(), os.getloadavg()[0]
        section = runners[name]()
        if failed:
            section.lines += ["", "Peers that could not be imported: "
                              + "; ".join(f"{k}: {v}" for k, v in failed.items())]
        section.lines += ["", f"Task wall time {time.perf_counter() - start:.0f} s"
                          + (" (--quick)" if args.quick else "") + f"; machine load average {load_before:.1f} "
                          f"at the start, {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores, shared: "
                          "timings are noisy, ratios within one table are the comparison)."]
        section.lines[-1] += f" Run started {stamp}."
        sections.append(section)
        print("\n" + "\n".join(section.lines), flush=True)
        if not args.no_record:
            append_section(section.title, section.lines)
        data = write_json(Path(args.json), sections, stamp)
    summary = summary_table([data]) if sections else []
    print("\n## Summary (for the README)\n\n" + "\n".join(summary))
    print(f"\nwhole harness: {time.perf_counter() - started:.0f} s")


def run_tasks_in_subprocesses(args, chosen: list[str]) -> None:
    """Each task in a fresh process (peers leak memory across many configs; with the address-space
    limit that turned later runs into spurious out-of-memory failures). Sections are recorded
    as each task finishes; the merged JSON and the summary come at the end."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    passthrough = ["--peers", args.peers, "--threads", str(args.threads), "--memory-gb", str(args.memory_gb)]
    for flag, value in (("--quick", args.quick), ("--no-sweep", args.no_sweep)):
        passthrough += [flag] if value else []
    for flag, value in (("--speed-sizes", args.speed_sizes), ("--limit", args.limit),
                        ("--speed-limit", args.speed_limit)):
        passthrough += [flag, str(value)] if value else []
    target = Path(args.json)
    merged, started = {"started": stamp, "sections": []}, time.perf_counter()
    jobs = []
    for name in chosen:
        if name == "mislabel":  # one process per problem: a peer's out-of-memory failure can leave memory held
            models = ("logreg",) if args.quick else tasks.Settings().mislabel_models
            jobs += [(f"mislabel-{m}-{noise:g}", name, ["--mislabel-problem", f"{m}:{noise:g}"])
                     for noise in tasks.Settings().noise for m in models]
        else:
            jobs.append((name, name, []))
    for label, name, extra in jobs:
        part = target.with_name(f"{target.stem}-{label}.json")
        part.unlink(missing_ok=True)
        rc = subprocess.call([sys.executable, str(Path(__file__).resolve()), "--tasks", name, "--json", str(part),
                              "--no-record", "--in-process", *passthrough, *extra])
        if rc != 0 or not part.exists():
            title = f"Peers side by side: task {name} (benchmarks/peers/run.py)"
            lines = [f"The task's process failed (exit status {rc}); no results. Run started {stamp}."]
            sections = [{"title": title, "lines": lines, "runs": {}}]
        else:
            sections = json.loads(part.read_text())["sections"]
        for section in sections:
            if not args.no_record:
                append_section(section["title"], section["lines"])
        merged["sections"] += sections
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(merged, indent=1))
    print("\n## Summary (for the README)\n\n" + "\n".join(summary_table([merged])))
    print(f"\nwhole harness: {time.perf_counter() - started:.0f} s; runs written to {target}")


def summary_table(data_list: list[dict]) -> list[str]:
    """One row per (tool, method): 'default / tuned' score per task column, and speed, from
    the JSON of one or more runs (see `write_json`)."""
    columns, cells, order = [], {}, []
    for data in data_list:
        for section in data["sections"]:
            for kind, pairs in section["runs"].items():
                if kind not in columns:
                    columns.append(kind)
                for default, best in pairs:
                    key = (default["tool"], default["method"])
                    if key not in cells:
                        cells[key] = {}
                        order.append(key)
                    cells[key][kind] = _cell(kind, default, best)
    order.sort(key=lambda key: key[0] != "influence-debugger")  # our rows first, then each peer as it came
    header = ["tool", "method"] + [_column_name(c) for c in columns]
    rows = [[tool, method] + [cells[(tool, method)].get(c, "") for c in columns] for tool, method in order]
    return markdown_table(header, rows)


def _column_name(kind: str) -> str:
    if kind == "loo":
        return "LOO R (digits logreg)"
    if kind == "lds":
        return "LDS (digits MLP)"
    if kind.startswith("lds "):
        return f"LDS ({kind.split()[1]} MLP)"
    if kind.startswith("mislabel"):
        return "mislabel AUC, " + kind.removeprefix("mislabel ")
    if kind.startswith("speed"):
        return f"fit + 100 queries (s), n={int(kind.split()[1]):,}"
    return kind


def _ok(run: dict) -> bool:
    return run["status"] == "ok" and run["score"] is not None


def _cell(kind: str, default: dict, best: dict | None) -> str:
    if kind.startswith("speed"):
        return fmt_time(default["seconds"]) if _ok(default) else _short(default["status"])
    d = fmt(default["score"]) if _ok(default) else _short(default["status"])
    if default["tool"] in ("influence-debugger", "cleanlab") or best == default:
        return d
    return f"{d} / {fmt(best['score']) if best is not None else 'none'}"


def _short(status: str) -> str:
    if status.startswith("timed out"):
        return "timeout"
    if status.startswith(("skipped", "not run")):
        return "skipped"
    if status.startswith("unsupported"):
        return "n/a"
    if "NaN" in status:
        return "NaN"
    if "out of memory" in status:
        return "OOM"
    return "failed"


def write_json(path: Path, sections, started: str) -> dict:
    def run_dict(r):
        return {"tool": r.tool, "method": r.method, "setting": r.setting, "settings": {k: repr(v) for k, v in
                r.settings.items()}, "score": r.score, "seconds": r.seconds, "status": r.status,
                "extra": {k: v for k, v in r.extra.items() if isinstance(v, (int, float, str, bool))}}

    data = {"started": started, "sections": [{"title": s.title, "lines": s.lines, "runs": {k: [[run_dict(d), None if b is None else run_dict(b)]
                                                         for d, b in v] for k, v in s.runs.items()}}
                         for s in sections]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    print(f"runs written to {path}")
    return data


if __name__ == "__main__":
    main()
