"""A real fine-tuned transformer: MiniLM + LoRA on Rotten Tomatoes, where one feed's vendor
labelled 40% of its fresh reviews rotten (`influence.demos.text_finetuned`), attributed by
our methods and by Kronfluence (EK-FAC, its defaults) on the same model, each in a forked
child process.

Per tool: fit time, self-influence time over the whole training set, query time (top-10
for every wrong eval prediction, and the per-source harm), peak RSS of the child, mislabel
ROC AUC of self-influence against the planted flips (beside the training loss and a random
order), the rank of the faulty feed among the feeds — by the signed group harm on the wrong
predictions (`influence.harm`, what the report and the app's Groups tab rank by), by mean
self-influence and by how often its reviews are among the top-10 harmful — and the share of
flipped reviews among the top-10 harmful training examples of the wrong predictions (their
traces). A last row attributes every one of MiniLM's 22.7 M parameters (method trak,
count-sketch projection) on a subset, to show the scale path. Appends the tables to
benchmarks/RESULTS.md. The fine-tune is cached (`$INFLUENCE_APP_CACHE` or
~/.cache/influence-debugger/app, in text-finetuned/build-<recipe hash>).

`--app` instead times the app's path from an empty cache folder (the data, the fine-tune,
the index, the Session, then the Groups tab, Suspects and the traces of the wrong
predictions, all through `influence_app.session.Session`) and appends that row.

    OMP_NUM_THREADS=1 python benchmarks/text_finetuned.py [--methods auto,trak] [--no-kronfluence]
        [--full-model 512] [--no-write]
    OMP_NUM_THREADS=1 python benchmarks/text_finetuned.py --app [--cache /tmp/fresh]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import influence as inf  # noqa: E402
from _results import append_section, markdown_table  # noqa: E402
from influence.demos import text_finetuned as demo  # noqa: E402
from influence.harm import example_harm, group_harm  # noqa: E402

K = 10


def cache_folder() -> Path:
    """The app demo's cache (the build folder inside is named after the recipe)."""
    root = os.environ.get("INFLUENCE_APP_CACHE") or Path.home() / ".cache" / "influence-debugger" / "app"
    return Path(root) / "text-finetuned"


class Clock:
    """Wall and CPU seconds of the phases of one run (CPU time is what a quiet machine would
    take with one thread; the wall time here is inflated by other jobs on the shared machine)."""

    def __init__(self):
        self.times: dict[str, tuple[float, float]] = {}

    def __call__(self, phase: str):
        clock = self

        class Phase:
            def __enter__(self):
                self.wall, self.cpu = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                clock.times[phase] = (time.perf_counter() - self.wall, time.process_time() - self.cpu)

        return Phase()


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Setup:
    """The fine-tuned model, the data, the wrong eval predictions and the planted flips."""

    def __init__(self, limit: int | None = None):
        self.model, self.train, self.eval = demo.load_or_train(cache_folder())
        if limit:  # a quick check of the script, not a result
            self.train, self.eval = self.train.select(range(limit)), self.eval.select(range(limit // 3))
        logits = demo.predict(self.model, self.eval)
        labels = torch.tensor(self.eval["label"])
        self.accuracy = float((logits.argmax(1) == labels).float().mean())
        wrong = torch.nonzero(logits.argmax(1) != labels).flatten().tolist()
        self.wrong = self.eval.select(wrong)
        self.fresh_called_rotten = int((labels[wrong] == 1).sum())
        self.flipped = np.array(self.train["flipped"])
        self.sources = self.train["source"]
        train_logits = demo.predict(self.model, self.train)
        self.train_loss = torch.nn.functional.cross_entropy(train_logits, torch.tensor(self.train["label"]),
                                                            reduction="none").numpy()


def source_ranks(setup: Setup, self_influence: np.ndarray, harmful: np.ndarray, harm: dict[str, float]) -> dict:
    """The noisy feed's rank (1 = most suspicious) among the feeds by three measures: how often
    its reviews are among the top-K harmful of a wrong prediction, its mean self-influence, and
    the signed group harm on the wrong predictions (`harm`: feed → `influence.harm` group harm,
    −Σ_j Σ_{i∈feed} score[j, i] / n_train, > 0 = harmful)."""
    sources = np.array(setup.sources)
    feeds = sorted(set(sources))
    counts = {f: int((sources[harmful] == f).sum()) for f in feeds}
    mean_self = {f: float(self_influence[sources == f].mean()) for f in feeds}

    def rank(values: dict) -> int:
        return sorted(feeds, key=lambda f: -values[f]).index(demo.NOISY_SOURCE) + 1

    return {"rank_count": rank(counts), "rank_self": rank(mean_self), "rank_sum": rank(harm) if harm else None}


def summarise(setup: Setup, self_influence: np.ndarray, harmful: np.ndarray, harm: dict[str, float]) -> dict:
    return {"auc": roc_auc_score(setup.flipped, self_influence), "flipped_in_top": float(setup.flipped[harmful].mean()),
            "harm": harm, **source_ranks(setup, self_influence, harmful, harm)}


def run_ours(setup: Setup, method: str, options: dict) -> dict:
    torch.manual_seed(0)
    clock = Clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", inf.InfluenceWarning)
        with clock("fit"):
            attr = inf.Attributor(setup.model, setup.train, task=demo.ReviewTask(), method=method, batch_size=32,
                                  progress=False, **options).fit()
        with clock("self"):
            self_influence = attr.self_influence().double().numpy()
        with clock("query"):
            top = attr.top_k(setup.wrong, k=K)
            groups = group_harm(attr, setup.wrong, setup.sources)
    harm = dict(zip(groups.values, groups.harm.tolist()))
    harmful = top.harmful.indices[top.harmful.scores < 0].numpy()
    chosen = attr.diagnostics["method"] + (" (count-sketch)" if attr.diagnostics.get("projection") == "countsketch"
                                           else "")
    label = f"{method} → {chosen}" if method == "auto" else chosen
    return {"tool": "influence-debugger", "method": label, "times": clock.times, "rss": peak_rss_gib(),
            "p": attr.fm.p, "damping": attr.damping, **summarise(setup, self_influence, harmful, harm)}


def run_kronfluence(setup: Setup, strategy: str = "ekfac") -> dict:
    import copy
    import logging
    import tempfile

    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs

    tracked = [n for n, m in setup.model.named_modules() if isinstance(m, torch.nn.Linear)
               and any(p.requires_grad for p in m.parameters())]  # the LoRA A/B matrices and the head

    class LoraTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"]
            if sample:
                with torch.no_grad():
                    labels = torch.multinomial(torch.softmax(logits.detach(), dim=-1), 1).flatten()
            return torch.nn.functional.cross_entropy(logits, labels, reduction="sum")

        def compute_measurement(self, batch, model):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")

        def get_influence_tracked_modules(self):
            return tracked

    def collate(rows):
        batch = demo.padded({"input_ids": [r["input_ids"] for r in rows]})
        return {**batch, "labels": torch.tensor([r["label"] for r in rows])}

    columns = ["input_ids", "attention_mask", "label"]
    train, wrong = setup.train.select_columns(columns), setup.wrong.select_columns(columns)
    task = LoraTask()
    model = prepare_model(copy.deepcopy(setup.model), task)
    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        analyzer = Analyzer(analysis_name="text", model=model, task=task, cpu=True, disable_tqdm=True,
                            output_dir=out, log_level=logging.WARNING)
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=collate))
        with clock("fit"):
            analyzer.fit_all_factors(factors_name="f", dataset=train, per_device_batch_size=32,
                                     factor_args=FactorArguments(strategy=strategy), overwrite_output_dir=True)
        with clock("self"):
            analyzer.compute_self_scores(scores_name="s", factors_name="f", train_dataset=train,
                                         per_device_train_batch_size=32, overwrite_output_dir=True)
            self_influence = analyzer.load_self_scores("s")["all_modules"].double().numpy()
        with clock("query"):
            analyzer.compute_pairwise_scores(scores_name="q", factors_name="f", query_dataset=wrong,
                                             train_dataset=train, per_device_query_batch_size=64,
                                             per_device_train_batch_size=32, overwrite_output_dir=True)
            scores = analyzer.load_pairwise_scores("q")["all_modules"].double()
    harmful = scores.topk(K, dim=1, largest=False)
    harmful_ids = harmful.indices[harmful.values < 0].numpy()
    per_example = example_harm(scores, len(setup.train))  # the package's one definition of harm
    sources = np.array(setup.sources)
    harm = {f: float(per_example[sources == f].sum()) for f in sorted(set(sources))}
    return {"tool": "Kronfluence 1.0.1", "method": strategy.upper().replace("EKFAC", "EK-FAC"),
            "times": clock.times, "rss": peak_rss_gib(), "p": sum(p.numel() for p in setup.model.parameters()
                                                                 if p.requires_grad),
            "damping": "1e-8 (default)", **summarise(setup, self_influence, harmful_ids, harm)}


def run_full_model(setup: Setup, n: int) -> dict:
    """Every parameter of MiniLM attributed (trak, count-sketch), on n training reviews drawn at random."""
    rows = np.sort(np.random.default_rng(0).choice(len(setup.train), size=n, replace=False))
    train = setup.train.select(rows.tolist())
    task = demo.ReviewTask(parameters=["*"])
    clock = Clock()
    with clock("fit"):
        attr = inf.Attributor(setup.model, train, task=task, method="trak", projection="countsketch", batch_size=8,
                              progress=False).fit()
    with clock("self"):
        self_influence = attr.self_influence().double().numpy()
    with clock("query"):
        attr.top_k(setup.wrong, k=K)
    return {"tool": "influence-debugger", "method": f"trak (countsketch), every parameter, {n} random reviews",
            "times": clock.times, "rss": peak_rss_gib(), "p": attr.fm.p, "damping": attr.damping,
            "auc": roc_auc_score(setup.flipped[rows], self_influence), "flipped_in_top": None, "rank_count": None,
            "rank_self": None, "rank_sum": None}


def run_app(root: Path) -> dict:
    """The app's path, timed from `root` (empty for a fresh run): the demo as `influence app
    --demo text-finetuned` builds it, then the Session's answers to the Groups tab (harm of
    each source), Suspects (self-influence) and the traces of every wrong prediction."""
    from influence_app.demo import text_finetuned
    from influence_app.session import Session

    clock, lines = Clock(), []
    with clock("demo (data, fine-tune, index)"):
        setup = text_finetuned(Path(root) / "text-finetuned", log=lines.append)
    with clock("session (eval predictions)"):
        session = Session(setup)
    with clock("Groups tab: harm by source"):
        groups = session.group_harm("source")
    flipped = np.array(setup.train["flipped"])
    with clock("Suspects: self-influence"):
        suspects = session.suspects("self-influence", top_n=int(flipped.sum()))
    with clock("traces of the wrong predictions"):
        traces = [session.trace(int(j), k=K) for j in session.bad.tolist()]
    harmful = np.concatenate([t.harmful["train id"].to_numpy() for t in traces]).astype(int)
    fine_tune = json.loads((demo.build_folder(Path(root) / "text-finetuned") / "fine_tune.json").read_text())
    return {"times": clock.times, "rss": peak_rss_gib(), "fine_tune": fine_tune, "method": setup.attributor.diagnostics[
                "method"], "groups": groups[["group", "harm", "estimator", "count"]].to_dict("records"),
            "rank_sum": groups["group"].tolist().index(demo.NOISY_SOURCE) + 1, "queries": len(traces),
            "flipped_in_traces": float(flipped[harmful].mean()), "flipped_base": float(flipped.mean()),
            "flipped_in_suspects": float(flipped[suspects["train id"].to_numpy().astype(int)].mean()),
            "n_flipped": int(flipped.sum())}


def in_child(fn, *args) -> dict:
    """Run fn(*args) in a forked child (its own peak RSS); errors become a row."""
    queue = multiprocessing.get_context("fork").SimpleQueue()

    def child():
        try:
            queue.put(fn(*args))
        except Exception as error:  # noqa: BLE001 — a failure is a result
            queue.put({"error": f"{type(error).__name__}: {str(error)[:300]}"})

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join()
    return queue.get() if not queue.empty() else {"error": f"child exited with code {process.exitcode}"}


def fmt(v, digits=3):
    if v is None:
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def ours_table(setup: Setup, rows: list[dict]) -> list[list]:
    table = []
    for r in rows:
        if "error" in r:
            table.append(["?", "?", "—", r["error"], "", "", "", "", "", ""])
            continue
        t = {phase: f"{wall:.0f} ({cpu:.0f} CPU)" for phase, (wall, cpu) in r["times"].items()}
        ranks = " / ".join(fmt(r[k]) for k in ("rank_sum", "rank_self", "rank_count"))
        table.append([r["tool"], r["method"], f"{r['p']:,}", t["fit"], t["self"], t["query"], fmt(r["rss"], 2),
                      fmt(r["auc"]), fmt(r["flipped_in_top"], 2), ranks])
    by_loss = source_ranks(setup, setup.train_loss, np.array([], dtype=int), {})["rank_self"]
    table.append(["training loss", "(baseline)", "—", "—", "—", "—", "—",
                  fmt(roc_auc_score(setup.flipped, setup.train_loss)), "—", f"— / {by_loss} (mean loss) / —"])
    table.append(["random order", "(baseline)", "—", "—", "—", "—", "—", "0.500",
                  fmt(float(setup.flipped.mean()), 2), "—"])
    return table


def notes(setup: Setup, rows: list[dict]) -> list[str]:
    info_file = demo.build_folder(cache_folder()) / "fine_tune.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    harm = "; ".join(f"{r['tool']} {r['method']}: " + ", ".join(f"{f} {v:+.3g}" for f, v in sorted(
        r["harm"].items(), key=lambda kv: -kv[1])) for r in rows if r.get("harm"))
    return [
        f"MiniLM-L6 (22.7 M parameters) + LoRA r={demo.RANK} on query/value and the head (74,498 trained), fine-tuned "
        f"{info.get('epochs', demo.EPOCHS)} epochs in {info.get('seconds', '?')} s wall ({info.get('cpu_seconds', '?')}"
        f" s CPU, {info.get('threads', '?')} thread, load average {info.get('load_average', '?')}) over batches of "
        f"similar lengths; eval accuracy {setup.accuracy:.3f}; the fault: {demo.NOISY_SOURCE}'s vendor labelled "
        f"{int(setup.flipped.sum())} of its fresh reviews rotten ({demo.CORRUPTION}; {setup.flipped.mean():.1%} of the "
        f"{len(setup.flipped)} training labels); the {len(setup.wrong)} wrong eval predictions "
        f"({setup.fresh_called_rotten} fresh called rotten) are the queries. Load average at the end: "
        f"{os.getloadavg()[0]:.1f} (the machine is shared: timings are inflated by other jobs).",
        "Ours: the default method (auto) and attributed parameters (the PEFT adapters and head); the demo's task "
        "(`ReviewTask`) only cuts each batch's padding, the rows being stored shortest first. Kronfluence: EK-FAC over "
        "the same LoRA and head Linear modules, its defaults, batches padded to their longest; its queries make a pass "
        "over the training set. Times: wall seconds (CPU seconds of the one thread).",
        f"Group harm on the wrong predictions (`influence.harm`, > 0 = harmful; Kronfluence's scores summed the same "
        f"way): {harm}.",
    ]


def run_benchmark(args) -> None:
    start = time.perf_counter()
    setup = Setup(args.limit)
    print(f"setup {time.perf_counter() - start:.0f} s; eval accuracy {setup.accuracy:.3f}; {len(setup.wrong)} wrong; "
          f"{setup.flipped.sum()} flipped of {len(setup.flipped)}", flush=True)
    options = {"trak": {"projection": "countsketch"}}
    rows = []
    for method in args.methods.split(","):
        rows.append(in_child(run_ours, setup, method, dict(options.get(method, {}))))
        print(rows[-1], flush=True)
    if not args.no_kronfluence:
        rows.append(in_child(run_kronfluence, setup))
        print(rows[-1], flush=True)
    if args.full_model:
        rows.append(in_child(run_full_model, setup, args.full_model))
        print(rows[-1], flush=True)
    header = ["tool", "method", "p attributed", "fit, s: wall (CPU)", "self-influence, s", "queries, s", "RSS, GiB",
              "mislabel AUC (self-influence)", f"flipped among top-{K} harmful",
              f"faulty feed's rank of {demo.N_SOURCES}: signed group harm / mean self-influence / top-{K} harmful "
              "count"]
    table, lines = ours_table(setup, rows), notes(setup, rows)
    for line in [" | ".join(map(str, row)) for row in table] + lines:
        print(line)
    if not args.no_write and not args.limit:
        append_section("Fine-tuned transformer (MiniLM + LoRA, Rotten Tomatoes, one-way label fault in one feed) — "
                       "benchmarks/text_finetuned.py", markdown_table(header, table) + [""] + lines)


def run_app_benchmark(args) -> None:
    root = Path(args.cache or cache_folder().parent)
    fresh = not (demo.build_folder(root / "text-finetuned") / "model.safetensors").exists()
    load = os.getloadavg()[0]
    r = in_child(run_app, root)
    print(r, flush=True)
    if "error" in r:
        raise SystemExit(r["error"])
    total = [sum(t[k] for t in r["times"].values()) for k in (0, 1)]
    header = ["phase", "wall, s", "CPU, s"]
    table = [[phase, f"{wall:.0f}", f"{cpu:.0f}"] for phase, (wall, cpu) in r["times"].items()]
    table.append(["**total**", f"**{total[0]:.0f}**", f"**{total[1]:.0f}**"])
    ft = r["fine_tune"]
    groups = ", ".join(f"{g['group']} {g['harm']:+.3g}" for g in r["groups"])
    lines = [f"{'An empty cache folder (a fresh run)' if fresh else 'The cached fine-tune'}; the fine-tune took "
             f"{ft.get('seconds')} s wall / {ft.get('cpu_seconds')} s CPU ({ft.get('epochs')} epochs); "
             f"method {r['method']}; peak RSS {r['rss']:.2f} GiB; load average {load:.1f} at the start, "
             f"{os.getloadavg()[0]:.1f} at the end.",
             f"Groups tab (`Session.group_harm('source')`, {r['groups'][0]['estimator']}): {groups} — "
             f"{demo.NOISY_SOURCE} ranked {r['rank_sum']} of {demo.N_SOURCES}. Traces of the {r['queries']} wrong "
             f"predictions: {r['flipped_in_traces']:.0%} of their top-{K} harmful reviews are flipped "
             f"({r['flipped_base']:.1%} of the training set); of the top {r['n_flipped']} Suspects by self-influence, "
             f"{r['flipped_in_suspects']:.0%} are flipped."]
    for line in [" | ".join(map(str, row)) for row in table] + lines:
        print(line)
    if not args.no_write:
        append_section("Fine-tuned text demo through the app's Session (`--demo text-finetuned`) — "
                       "benchmarks/text_finetuned.py --app", markdown_table(header, table) + [""] + lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="auto", help="ours, comma-separated (e.g. auto,ekfac)")
    parser.add_argument("--no-kronfluence", action="store_true")
    parser.add_argument("--full-model", type=int, default=256, help="reviews for the all-parameters row (0: skip)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="first N training reviews only (a quick check)")
    parser.add_argument("--app", action="store_true", help="time the app's path (Session) instead")
    parser.add_argument("--cache", default=None, help="with --app: the demos' cache folder (empty: a fresh run)")
    args = parser.parse_args()
    (run_app_benchmark if args.app else run_benchmark)(args)


if __name__ == "__main__":
    main()
