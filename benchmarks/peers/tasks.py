"""The four tasks of the side-by-side, each reusing the project's own benchmark setting.

- `loo`: leave-one-out agreement on digits logistic regression (benchmarks/loo.py's setting,
  `influence.validate.leave_one_out` with one retrain cache shared by every method and kept
  on disk).
- `lds`: the Linear Datamodeling Score on the digits MLP (benchmarks/lds.py's model, recipe
  and cached retrained ground truth, `influence.lds.lds`).
- `mislabel`: finding flipped labels by self-influence (benchmarks/mislabel.py's data,
  models and metric), with cleanlab's label-quality ranking.
- `speed`: wall time of fit + 100 queries and of 1 more query on MNIST (an MLP 784-64-10 as
  in benchmarks/query_speed.py) at 5,000 (and 50,000) training examples.

Each task returns a `Section`: the Markdown that goes to RESULTS.md and the runs that feed
the README summary.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
for path in (str(ROOT), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

import influence as inf  # noqa: E402
from _results import markdown_table  # noqa: E402  (benchmarks/_results.py)
from adapters.base import Adapter, Problem  # noqa: E402
from adapters.ours import Ours  # noqa: E402
from harness import HEADER, Measured, Run, fmt, fmt_time, ratio, result_rows, run_config, sweep  # noqa: E402
from influence.data import as_data  # noqa: E402
from influence.demos.data import load_digits_dataset  # noqa: E402
from influence.model import FunctionalModel  # noqa: E402
from influence.storage import atomic_write  # noqa: E402
from influence.demos.training import train_adam  # noqa: E402

CACHE = BENCH / ".cache"          # shared with benchmarks/lds.py (git-ignored)
PEER_CACHE = CACHE / "peers"      # this harness's own ground truth and trained models


@dataclass
class Settings:
    """What a run of the harness does (filled from run.py's command line)."""

    quick: bool = False
    limit: float = 60.0              # seconds per config (fit + queries) on the digits tasks
    speed_limit: float = 300.0       # seconds per config on the speed task
    tuned: bool = True               # run each peer's sweep as well as its defaults
    loo_test_points: int = 10
    loo_per_test: int = 100
    lds_test_points: int = 100       # must match the cached ground truth of benchmarks/lds.py
    mislabel_models: tuple = ("logreg", "mlp")
    mislabel_sweep_models: tuple = ("logreg",)  # the peers' sweeps run on these (time budget)
    noise: tuple = (0.1, 0.3)
    speed_sizes: tuple = (5000,)
    speed_large_methods: tuple = ()  # adapters run at the larger speed sizes ("Tool:method" names)


@dataclass
class Section:
    title: str
    lines: list[str]
    runs: dict[str, list] = field(default_factory=dict)  # kind -> list of (default, best) pairs


# ------------------------------------------------------------------------ helpers
def _best(runs: list[Run]) -> Run | None:
    """Our most accurate run; among runs within 5e-4 of the top score (equal at the 3 decimals
    shown), the fastest."""
    good = [r for r in runs if r.ok]
    if not good:
        return None
    top = max(r.score for r in good)
    return min((r for r in good if r.score >= top - 5e-4), key=lambda r: r.seconds)


# Our rows that are a method with non-default options.
OUR_VARIANTS = {"trak-countsketch": {"method": "trak", "options": {"projection": "countsketch"}}}


def our_config(name: str) -> dict:
    """The `Ours` settings for a row name: a method, or a variant from OUR_VARIANTS."""
    return OUR_VARIANTS.get(name, {"method": name})


def _ours(problem: Problem, methods: list[str], work, evaluate, limit) -> list[Run]:
    runs = []
    for method in methods:
        run = run_config(Ours, problem, our_config(method), work, evaluate, limit)
        run.method = method
        runs.append(run)
    return runs


def _our_rows(runs: list[Run], best: Run | None) -> list[list[str]]:
    rows = []
    for r in runs:
        label = "defaults" + (" (default method)" if r.method == "auto" else "")
        rows.append([r.tool, r.method, label, fmt(r.score), fmt_time(r.seconds),
                     ratio(r.score, best.score if best else None), ratio(r.seconds, best.seconds if best else None),
                     "ok" if r.status == "ok" else r.status])
    return rows


def _peer_section(classes, problem, work, evaluate, limit, tuned, ours_best):
    rows, pairs = [], []
    for cls in classes:
        default, best, _ = sweep(cls, problem, work, evaluate, limit, tuned=tuned)
        rows += result_rows(default, best, ours_best, tuned)
        pairs.append((default, best))
    return rows, pairs


def _digest(*items) -> str:
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, torch.Tensor):
            h.update(str((tuple(item.shape), item.dtype)).encode())
            h.update(item.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(item).encode())
    return h.hexdigest()[:16]


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    data = save({k: v.contiguous() for k, v in tensors.items()})
    atomic_write(path, lambda f: f.write(data))


def _load_tensors(path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    return load_file(path) if path.exists() else None


# ------------------------------------------------------------------------ LOO
def loo_task(settings: Settings, peers: list[type[Adapter]]) -> Section:
    """benchmarks/loo.py's setting: multinomial logistic regression on digits, L2 0.01, the
    highest-loss test points, for each the largest-|score| training points removed and the
    model retrained (float64 L-BFGS, warm start); Pearson R of predicted vs actual change."""
    from loo import digits_logreg  # benchmarks/loo.py
    from influence.validate import correlations, leave_one_out

    model, task, (X, y), (Xq, yq), _ = digits_logreg(settings.loo_test_points)
    fm = FunctionalModel(model)
    n, r = len(y), settings.loo_per_test
    problem = Problem(model, X, y, task.loss, task.loss, "loss", 0.01, 10)
    exact = inf.Attributor(model, (X, y), task=task, method="exact", progress=False).fit()

    # one retrain per removed example, shared by every method and kept on disk
    path = PEER_CACHE / f"loo-{_digest(X, y, Xq, yq, 0.01, fm.fingerprint())}.safetensors"
    stored = _load_tensors(path) or {}
    cache = {int(k): v for k, v in stored.items()}

    def work(adapter: Adapter):
        adapter.fit()
        return adapter.scores(Xq, yq)

    def evaluate(scores: torch.Tensor) -> float:
        scores = scores.detach().cpu().double()
        idx = scores.abs().argsort(dim=1, descending=True)[:, :r]
        # configs run in forked children: take up what earlier children stored on disk
        cache.update({int(k): v for k, v in (_load_tensors(path) or {}).items()})
        before = len(cache)
        result = leave_one_out(exact, (Xq, yq), idx, retrain_cache=cache, progress=False)
        if len(cache) > before:
            _save_tensors(path, {str(k): v.double() for k, v in cache.items()})
        return correlations(torch.gather(scores, 1, idx) / n, result.actual)[0]

    print(f"\n== LOO: digits logistic regression, n_train={n}, p={fm.p}, {len(yq)} worst test points × "
          f"top {r} |score| (retrain cache: {len(cache)} stored)", flush=True)
    ours = _ours(problem, ["auto", "cg", "exact", "lissa", "arnoldi", "ekfac", "trak", "identity"], work, evaluate,
                 settings.limit)
    best = _best(ours)
    rows, pairs = _peer_section(peers, problem, work, evaluate, settings.limit, settings.tuned, best)
    cache.update({int(k): v for k, v in (_load_tensors(path) or {}).items()})  # what the configs stored
    table = markdown_table(HEADER, _our_rows(ours, best) + rows)
    intro = [f"Leave-one-out agreement (benchmarks/loo.py's setting): multinomial logistic regression on digits, "
             f"float64, L2 0.01, n_train={n}, p={fm.p}; the {len(yq)} highest-loss test points × their {r} "
             f"largest-|score| training points (per method) removed and retrained (float64 L-BFGS to ‖∇‖∞ ≤ 1e-10, "
             f"warm start; {len(cache)} distinct retrains, cached). Score = Pearson R of score/n vs the actual change "
             "of the test loss. Wall time = fit + scores for the test points, one process, "
             f"{torch.get_num_threads()} thread(s). 'our best' = {_name(best)}."]
    return Section("Peers side by side: LOO on digits logistic regression (benchmarks/peers/run.py)",
                   intro + ["", *table], {"loo": [(o, o) for o in ours] + pairs})


def _name(run: Run | None) -> str:
    return "none" if run is None else f"{run.method} ({fmt(run.score)}, {fmt_time(run.seconds)} s)"


# ------------------------------------------------------------------------ LDS
def lds_task(settings: Settings, peers: list[type[Adapter]], margin_task_cls, dataset: str = "digits") -> Section:
    """benchmarks/lds.py's setting (`--dataset digits` or `mnist5k`): MLP d-32-10 tanh trained by
    full-batch Adam (500 epochs, cosine), L2 1e-3, margin measurement, 100 random 50% subsets ×
    2 retrains (the ground truth cached by benchmarks/lds.py), 100 test points.

    The model, retrain recipe and cache key are rebuilt from benchmarks/lds.py's `DATASETS`,
    `mlp`, `snapshots` and `state_at` and its key format; if that key changes, the retrains
    are recomputed (digits: a few minutes) rather than reused. mnist5k runs only when its
    ground truth is already cached (200 retrains on 5,000 images are not in this budget).
    """
    import math as _math

    import lds as lds_benchmark  # benchmarks/lds.py
    from influence.errors import InvalidArgumentError
    from influence.lds import lds

    load, dtype, _ = lds_benchmark.DATASETS[dataset]
    X, y, Xt, yt = load()
    Xq, yq = Xt[: settings.lds_test_points], yt[: settings.lds_test_points]
    weight_decay, lr, epochs = 1e-3, 1e-2, 500
    task = margin_task_cls(weight_decay=weight_decay)

    def retrain(rows: torch.Tensor, seed: int) -> torch.nn.Module:
        return train_adam(lds_benchmark.mlp(seed, X.shape[1], dtype), X[rows].to(dtype), y[rows], task,
                          epochs=epochs, lr=lr, seed=seed)

    flats: list[torch.Tensor] = []
    with lds_benchmark.snapshots(every=epochs // 5, offset=epochs // 10, store=flats):
        model = retrain(torch.arange(len(y)), 0)
    model = model.double()  # attribution in float64, as benchmarks/lds.py
    trajectory = [lds_benchmark.state_at(model, theta) for theta in flats]
    steps = [epochs // 10 + c * (epochs // 5) for c in range(len(flats))]
    lr_at = [lr * 0.5 * (1 + _math.cos(_math.pi * s / epochs)) for s in steps]
    arch = f"MLP {X.shape[1]}-32-10 tanh"
    key = f"{dataset} {arch} {dtype}, full-batch Adam lr={lr} cosine, {epochs} epochs, L2={weight_decay}"
    problem = Problem(model, X, y, task.loss, task.measurement, "margin", weight_decay, 10,
                      checkpoints=trajectory, checkpoint_weights=lr_at)
    shim = inf.Attributor(model, (X, y), task=task, method="identity", progress=False).fit()
    n, p = len(y), sum(t.numel() for t in model.parameters())
    title = f"Peers side by side: LDS on the {dataset} MLP (benchmarks/peers/run.py)"
    kind = "lds" if dataset == "digits" else f"lds {dataset}"
    zeros = torch.zeros(len(yq), n, dtype=torch.float64)
    if dataset != "digits":
        try:
            lds(shim, (Xq, yq), subsets=100, retrain=None, cache_dir=CACHE, repeats=2, key=key, scores=zeros,
                progress=False)
        except InvalidArgumentError:
            note = (f"Skipped: no cached ground truth for {dataset} (run `python benchmarks/lds.py --dataset "
                    f"{dataset}` first; its 200 retrains are not in this harness's budget).")
            print(note)
            return Section(title, [note], {})

    def work(adapter: Adapter):
        adapter.fit()
        return adapter.scores(Xq, yq)

    last: dict = {}

    def evaluate(scores: torch.Tensor) -> float:
        last["result"] = lds(shim, (Xq, yq), subsets=100, retrain=retrain, cache_dir=CACHE, repeats=2, key=key,
                             scores=scores.detach().cpu().double(), progress=True)
        return last["result"].score

    print(f"\n== LDS: {dataset} {arch}, n_train={n}, p={p}, {len(yq)} test points, 100 subsets × 2 retrains",
          flush=True)
    our_methods = ["auto", "cg", "exact", "arnoldi", "ekfac", "trak", "trak-countsketch", "identity", "tracin"]
    if p > 20_000:
        our_methods.remove("exact")
    limit = settings.limit if dataset == "digits" else settings.speed_limit  # cg needs ~5 min on mnist5k
    ours = _ours(problem, our_methods, work, evaluate, limit)
    best = _best(ours)
    tuned = settings.tuned and dataset == "digits"  # mnist5k: defaults only (time budget)
    rows, pairs = _peer_section([c for c in peers if p <= getattr(c, "max_params", math.inf)], problem, work,
                                evaluate, limit, tuned, best)
    skipped = [c for c in peers if p > getattr(c, "max_params", math.inf)]
    for c in skipped:
        rows.append([c.tool, c.method, "defaults", "—", "—", "—", "—",
                     f"skipped: explicit p×p matrix for p={p:,}"])
    ceiling = last["result"].ceiling if "result" in last else None
    table = markdown_table(HEADER, _our_rows(ours, best) + rows)
    intro = [f"Linear Datamodeling Score (benchmarks/lds.py's setting and cached ground truth): {dataset}, {arch} "
             f"({dtype} training, float64 attribution), full-batch Adam ({epochs} epochs, cosine), L2 {weight_decay}, "
             f"n_train={n}, p={p}, measurement = margin; 100 random 50% subsets × 2 retrains, {len(yq)} test points. "
             f"Score = LDS against the mean of the two retrains (seed-noise ceiling vs one retrain: {fmt(ceiling)}). "
             "TracIn-style methods get the 5 trajectory checkpoints weighted by their learning rate (as tracin-cp5 "
             f"in benchmarks/lds.py). Wall time = fit + scores for the test points (limit {limit:.0f} s per "
             f"method). 'our best' = {_name(best)}."
             + ("" if tuned else " Peers at their defaults only (time budget).")]
    return Section(title, intro + ["", *table], {kind: [(o, o) for o in ours] + pairs})


# ------------------------------------------------------------------------ mislabel
def mislabel_task(settings: Settings, peers: list[type[Adapter]]) -> Section:
    """benchmarks/mislabel.py's setting: digits with 10% / 30% of the labels flipped; each
    self-influence ranking scored by ROC AUC against the flip mask; cleanlab's label quality
    (5-fold out-of-fold probabilities of the same model) as the non-influence peer."""
    import mislabel as mislabel_benchmark  # benchmarks/mislabel.py

    train, _ = load_digits_dataset(seed=0)
    X, y_clean = as_data(train, "train").batch(range(len(train)))
    X = X.double()
    lines, runs = [], {}
    for noise in settings.noise:
        y, flipped = mislabel_benchmark.flip_labels(y_clean, noise, seed=1)
        truth = flipped.numpy()
        for model_name in settings.mislabel_models:
            train_fn, weight_decay = mislabel_benchmark.MODELS[model_name]
            task = inf.ClassificationTask(weight_decay=weight_decay)
            model = train_fn(X, y, task)
            problem = Problem(model, X, y, task.loss, task.loss, "loss", weight_decay, 10)
            title = f"{model_name}, {noise:.0%} flipped ({int(truth.sum())} of {len(truth)})"
            print(f"\n== Mislabel: {title}", flush=True)

            def work(adapter: Adapter):
                adapter.fit()
                return adapter.self_influence()

            def evaluate(values: torch.Tensor) -> float:
                return mislabel_benchmark.evaluate(values.detach().cpu().double().numpy(), truth)[0]

            ours = _ours(problem, ["auto", "cg", "exact", "arnoldi", "ekfac", "trak", "identity"], work, evaluate,
                         settings.limit)
            best = _best(ours)
            tuned = settings.tuned and model_name in settings.mislabel_sweep_models
            rows, pairs = _peer_section(peers, problem, work, evaluate, settings.limit, tuned, best)
            with torch.no_grad():
                loss = task.loss(model(X), y).numpy()
            extra = [_plain("(baseline)", "training loss", evaluate(torch.from_numpy(loss)), 0.0, best)]
            start = time.perf_counter()
            try:
                suspicion, flagged = mislabel_benchmark.cleanlab_ranking(train_fn, X, y, task)
                seconds = time.perf_counter() - start
                precision = float(truth[flagged].mean()) if flagged.any() else float("nan")
                cl = Run("cleanlab", "label quality, 5-fold OOF", {}, "defaults",
                         evaluate(torch.from_numpy(np.asarray(suspicion))), seconds)
                cl.extra = {"flagged": int(flagged.sum()), "precision": precision}
                extra.append(_plain("cleanlab", f"label quality, 5-fold OOF ({int(flagged.sum())} flagged, "
                                    f"precision {precision:.2f})", cl.score, seconds, best))
            except Exception as err:  # noqa: BLE001
                cl = Run("cleanlab", "label quality, 5-fold OOF", {}, "defaults", status=f"failed: {err}")
                extra.append(["cleanlab", "label quality", "defaults", "—", "—", "—", "—", cl.status])
            rng = np.random.default_rng(0)
            extra.append(_plain("(baseline)", "random order", evaluate(torch.from_numpy(rng.random(len(truth)))),
                                0.0, best))
            table = markdown_table(HEADER, _our_rows(ours, best) + rows + extra)
            lines += [f"**{title}** — our best: {_name(best)}", "", *table, ""]
            runs[f"mislabel {model_name} {noise:.0%}"] = [(o, o) for o in ours] + pairs + [(cl, cl)]
    intro = ["Mislabel detection (benchmarks/mislabel.py's setting): digits, labels flipped to a random other class "
             "(seed 1); logreg = float64 L-BFGS optimum, L2 0.01; mlp = 64-32-10 tanh, full-batch Adam 500 epochs, "
             "L2 1e-3. Peers' sweeps run on logreg only (time budget); mlp rows are defaults. "
             "Score = ROC AUC of the self-influence ranking against the flip mask (cleanlab: its "
             "label-quality ranking from 5-fold out-of-fold probabilities of the same model). Wall time = fit + "
             "self-influence of every training example (cleanlab: the 5 retrains + ranking).", ""]
    which = ", ".join(f"{m} {v:.0%}" for v in settings.noise for m in settings.mislabel_models)
    return Section(f"Peers side by side: mislabel detection on digits, {which} (benchmarks/peers/run.py)",
                   intro + lines, runs)


def _plain(tool, method, score, seconds, best) -> list[str]:
    return [tool, method, "—", fmt(score), fmt_time(seconds), ratio(score, best.score if best else None),
            ratio(seconds, best.seconds if best else None) if seconds else "—", "ok"]


# ------------------------------------------------------------------------ speed
def mnist_model(n: int, epochs: int = 60) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor,
                                                     torch.Tensor, float]:
    """MLP 784-64-10 (float32) trained on the first n MNIST images by full-batch Adam (cached)."""
    from influence.demos.data import load_mnist

    X, y = (torch.from_numpy(a) for a in load_mnist("train", limit=n))
    Xt, yt = (torch.from_numpy(a) for a in load_mnist("test", limit=1000))
    task = inf.ClassificationTask(weight_decay=1e-4)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    path = PEER_CACHE / f"mnist-mlp-{n}-{epochs}ep.safetensors"
    state = _load_tensors(path)
    if state is None:
        train_adam(model, X, y, task, epochs=epochs, lr=0.01)
        _save_tensors(path, dict(model.state_dict()))
    else:
        model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(Xt).argmax(1) == yt).float().mean())
    return model, X, y, Xt, yt, accuracy


def speed_task(settings: Settings, peers: list[type[Adapter]]) -> Section:
    """Fit + 100 queries (one batch of 100 test points → scores → top-10 helpful and harmful
    each), then 1 more query (one test point), each adapter at its defaults."""
    lines, runs = [], {}
    finished_small: set[str] = set()
    for n in sorted(settings.speed_sizes):
        model, X, y, Xt, yt, accuracy = mnist_model(n)
        task = inf.ClassificationTask(weight_decay=1e-4)
        problem = Problem(model, X, y, task.loss, task.loss, "loss", 1e-4, 10)
        p = sum(t.numel() for t in model.parameters())
        q100, q1 = (Xt[:100], yt[:100]), (Xt[100:101], yt[100:101])
        print(f"\n== Speed: MNIST MLP 784-64-10, n_train={n}, p={p}, test accuracy {accuracy:.3f}", flush=True)
        def work(adapter: Adapter) -> Measured:
            start = time.perf_counter()
            adapter.fit()
            scores = adapter.scores(*q100)
            top = scores.topk(10, dim=1)
            scores.topk(10, dim=1, largest=False)
            first = time.perf_counter() - start
            start = time.perf_counter()
            adapter.scores(*q1).topk(10, dim=1)
            one = time.perf_counter() - start
            return Measured(top.values, {"first": first, "one": one})

        def evaluate(_values) -> float:
            return 0.0

        large = n > min(settings.speed_sizes)
        our_methods = ["auto", "cg", "trak", "trak-countsketch", "ekfac", "arnoldi", "identity"]
        if p <= 20_000:
            our_methods.append("exact")
        configs = [(Ours, our_config(m), f"influence-debugger:{m}") for m in our_methods]
        configs += [(cls, {}, f"{cls.tool}:{cls.method}") for cls in peers]
        all_runs: list[tuple[Run, dict]] = []
        for cls, config, name in configs:
            if large and name not in settings.speed_large_methods:
                continue
            if large and name not in finished_small:
                run = Run(cls.tool, config.get("method", cls.method), {}, "defaults",
                          status=f"not run: did not finish at n={min(settings.speed_sizes):,}")
            elif p > getattr(cls, "max_params", math.inf):
                run = Run(cls.tool, cls.method, dict(cls.defaults), "defaults",
                          status=f"skipped: explicit p×p matrix for p={p:,} ({8 * p * p / 2**30:.0f} GiB in float64)")
            else:
                run = _timed(cls, problem, config, work, evaluate, settings.speed_limit)
                if cls is Ours:
                    run.method = name.split(":")[1]
            if not large and run.status == "ok":
                finished_small.add(name)
            all_runs.append((run, {}))
        ours = [r for r, _ in all_runs if r.tool == "influence-debugger"]
        default = next((r for r in ours if r.method == "auto"), None)
        fastest = min((r for r in ours if r.status == "ok"), key=lambda r: r.seconds, default=None)
        header = ["tool", "method", "setting", "fit + 100 queries (s)", "1 more query (s)", "index (no pass per query)",
                  "time ÷ our default (auto)", "time ÷ our fastest", "status"]
        rows = []
        for r, _ in all_runs:
            rows.append([r.tool, r.method, r.setting, fmt_time(r.seconds), fmt_time(r.extra.get("one")),
                         "yes" if r.extra.get("indexes") else "no",
                         ratio(r.seconds, default.seconds if default else None),
                         ratio(r.seconds, fastest.seconds if fastest else None), "ok" if r.status == "ok" else r.status])
        quickest = "none" if fastest is None else f"{fastest.method} ({fmt_time(fastest.seconds)} s)"
        lines += [f"**n_train = {n:,}** (p = {p:,}, test accuracy {accuracy:.3f}; our default auto: "
                  f"{fmt_time(default.seconds if default else None)} s; our fastest: {quickest})", "",
                  *markdown_table(header, rows), ""]
        runs[f"speed {n}"] = [(r, r) for r, _ in all_runs]
    intro = ["Wall time on MNIST (MLP 784-64-10, float32, full-batch Adam 60 epochs, L2 1e-4; the first n training "
             "images): fit, then one call scoring 100 test points and taking the top 10 per point ('fit + 100 "
             "queries'), then one call for 1 more test point ('1 more query'). Every method at its library's "
             f"defaults, one process, {torch.get_num_threads()} thread(s), limit {settings.speed_limit:.0f} s per "
             "method. 'index' = queries reuse stored training-side features instead of a pass over the training "
             "data.", ""]
    return Section("Peers side by side: speed on MNIST (benchmarks/peers/run.py)", intro + lines, runs)


def _timed(cls, problem, settings, work, evaluate, limit) -> Run:
    """One speed measurement. 'indexes' is false for our cg/lissa: their queries solve with
    curvature-vector products over the training set."""
    run = run_config(cls, problem, settings, work, evaluate, limit)
    indexes = cls.indexes and not (cls is Ours and settings.get("method") in ("cg", "lissa"))
    if run.status == "ok":
        run.seconds = run.score = run.extra["first"]
    run.extra["indexes"] = indexes
    return run
