"""Candidates × problems for issue 14: LDS, mislabel AUC, time, damping sensitivity.

    OMP_NUM_THREADS=1 benchmarks/peers/.venv/bin/python benchmarks/research/study.py lds digits
    OMP_NUM_THREADS=1 benchmarks/peers/.venv/bin/python benchmarks/research/study.py mislabel adult4k-mlp

One JSON line per (problem, candidate, setting) goes to benchmarks/research/results/<kind>.jsonl
(resumable: configs already there are skipped unless --again). Each line has the metric
(LDS against the mean of two retrains, or the ROC AUC of self-influence vs the flipped
labels), its 95% paired-bootstrap interval against the problem's reference, and the times
of the fit / queries / self-influence (one thread; the machine's load average is recorded:
times are only comparable within a line's problem and run).

Candidates (see ggn.py, kfac.py): exact (ExactGGN, eigh; damping swept for free),
lowrank r (LowRankTail, 2 passes, truncations of one rank-r_max fit; tail mean or zero;
index full or sketch), ekfac / kfac (EKFACEigen, fisher ggn / sampled, with or without the
L2 term in the curvature, damping swept; truncated-index variants), Kronfluence EK-FAC /
K-FAC (the peers adapter, library defaults), and the training loss (mislabel baseline).

Sign convention of every score: score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i), positive = helpful.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "peers"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import problems as P  # noqa: E402  (puts the repository root and benchmarks/ on sys.path)
from ggn import ExactGGN, LowRankTail  # noqa: E402
from kfac import EKFACEigen  # noqa: E402

RESULTS = HERE / "results"
RATIOS = (1e-6, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0)
EXACT_MAX_P = {"lds": 9_000, "mislabel": 9_000}  # eigh of p×p in float64 on one thread: minutes at 9–12k
RANKS = (50, 100, 200, 400, 1000)


def load_avg() -> float:
    return os.getloadavg()[0]


class Recorder:
    def __init__(self, kind: str, problem: str, again: bool):
        RESULTS.mkdir(exist_ok=True)
        self.path = RESULTS / f"{kind}.jsonl"
        self.kind, self.problem = kind, problem
        self.done = set()
        if self.path.exists() and not again:
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                if row["problem"] == problem:
                    self.done.add((row["candidate"], row["setting"]))

    def has(self, candidate: str, setting: str) -> bool:
        return (candidate, setting) in self.done

    def add(self, candidate: str, setting: str, metric: float, **extra) -> None:
        extra = {k: (float(v.double().mean()) if isinstance(v, torch.Tensor) else v) for k, v in extra.items()}
        row = {"problem": self.problem, "candidate": candidate, "setting": setting, "metric": metric,
               "load": round(load_avg(), 2), "time": time.strftime("%Y-%m-%d %H:%M"), **extra}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.done.add((candidate, setting))
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in extra.items() if k != "per_test"}
        print(f"{self.problem:14s} {candidate:28s} {setting:34s} {metric:.4f}  {shown}", flush=True)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# ---------------------------------------------------------------------------- LDS
def study_lds(name: str, again: bool, only: set[str] | None) -> None:
    pr = P.lds_problem(name)
    rec = Recorder("lds", name, again)
    reference: dict[str, torch.Tensor] = {}
    print(f"== LDS {name}: n={pr.n}, p={pr.p}, {pr.info}", flush=True)

    def want(c: str) -> bool:
        return only is None or c in only

    def evaluate(candidate, setting, scores, **extra):
        result = pr.truth(scores)
        ci = {}
        if "ref" in reference and candidate != "exact":
            d, lo, hi = P.paired_bootstrap_lds(result.per_test, reference["ref"])
            ci = {"diff_vs_ref": d, "ci_lo": lo, "ci_hi": hi}
        rec.add(candidate, setting, result.score, single=result.score_single, ceiling=result.ceiling, **ci,
                per_test=[None if not np.isfinite(v) else round(float(v), 5) for v in result.per_test], **extra)
        return result

    # exact (reference) where p allows; damping sweep for free after one eigh
    if pr.p <= EXACT_MAX_P["lds"] and want("exact"):
        ex, fit_s = timed(lambda: ExactGGN(pr.model, pr.task, solver="eigh").fit(pr.X, pr.y))
        Q, q_s = timed(lambda: ex.factors.grads(pr.Xq, pr.yq, pr.task.measurement))
        for ratio in RATIOS:
            ex.set_damping(ratio)
            res = evaluate("exact", f"ratio {ratio:g}", ex.precondition(Q) @ ex.G.T, damping=ex.damping,
                           fit_s=fit_s, factor_s=ex.timings["factors"], eigh_s=ex.timings["factorise"])
            if ratio == 0.3:
                reference["ref"] = res.per_test
        del ex
    # low rank + tail: one rank-r_max fit, truncated
    if want("lowrank"):
        r_max = min(max(RANKS) if pr.p <= 10_000 else 400, pr.p // 2)  # time: p = 12–25k on a loaded core
        lr, fit_s = timed(lambda: LowRankTail(pr.model, pr.task, rank=r_max, passes=2).fit(pr.X, pr.y))
        Q = lr.factors.grads(pr.Xq, pr.yq, pr.task.measurement).to(lr.dtype)
        base = {"fit_s": fit_s, "eig_s": lr.timings["eigenspace"], "grad_s": lr.timings["gradients"],
                "r_max": r_max}
        for r in [r for r in RANKS if r <= r_max]:
            sub = lr.truncate(r)
            for tail in ("mean", "zero", "diag"):
                sub.tail = tail
                sub.e_tail = sub._tail_value(sub.e, sub.U)
                ratios = RATIOS if (tail != "zero" and r in (100, r_max)) else (0.3,)
                for ratio in ratios:
                    sub.set_damping(ratio)
                    res = evaluate(f"lowrank r={r}", f"tail {tail}, ratio {ratio:g}", sub.precondition(Q) @ lr.G.T,
                                   damping=sub.damping, e_tail=sub.e_tail, **base)
                    if "ref" not in reference and r == r_max and tail == "mean" and ratio == 0.3:
                        reference["ref"] = res.per_test  # no exact at this p: the largest rank is the reference
        # 1-pass / 2-pass fits at r=100 and 400 (what a cheap fit actually captures)
        fitted = ((100, 1), (100, 2), (400, 1), (400, 2)) if pr.p <= 10_000 else ((400, 1),)
        for r, passes in fitted:
            if r > r_max:
                continue
            fit, fit_s = timed(lambda: LowRankTail(pr.model, pr.task, rank=r, passes=passes).fit(pr.X, pr.y))
            evaluate(f"lowrank r={r} fitted", f"passes {passes}, ratio 0.3", fit.scores(pr.Xq, pr.yq),
                     damping=fit.damping, fit_s=fit_s, eig_s=fit.timings["eigenspace"])
            if (r, passes) == (400, 2) or (pr.p > 10_000 and r == 400):
                for k in (512, 2048):
                    fit.index, fit.sketch_dim = "sketch", k
                    fit.S = torch.randn(k, pr.p, generator=torch.Generator().manual_seed(1),
                                        dtype=fit.dtype) / k**0.5
                    fit.features = fit._features(fit.G)
                    evaluate("lowrank r=400 fitted", f"passes {passes}, sketch k={k}, ratio 0.3",
                             fit.scores(pr.Xq, pr.yq), feature_dim=r + k)
        del lr
    # EK-FAC in its eigenbasis
    for correct, cand in ((True, "ekfac"), (False, "kfac")):
        if not want(cand):
            continue
        ek, fit_s = timed(lambda: EKFACEigen(pr.model, pr.task, correct=correct).fit(pr.X, pr.y))
        for ratio in RATIOS:
            ek.set_damping(ratio)
            (S, q_s) = timed(lambda ek=ek: ek.scores(pr.Xq, pr.yq))
            evaluate(cand, f"ggn, ratio {ratio:g}", S, damping=ek.damping, fit_s=fit_s, query_s=q_s,
                     **{f"{k}_s": v for k, v in ek.timings.items()})
        if correct:
            ek.set_damping(0.3)
            for keep in (0.3, 0.1, 0.03, 0.01):
                for tail in ("drop", "sketch"):
                    ek.keep, ek.tail = keep, tail
                    ek._build_index()
                    evaluate(cand, f"ggn, ratio 0.3, keep {keep:g}, tail {tail}", ek.scores(pr.Xq, pr.yq),
                             feature_dim=ek.feature_dim)
            ek.keep = 1.0
            ek.set_damping(None, 1e-8)
            ek.wd = 0.0
            ek.set_damping(None, 1e-8)
            evaluate(cand, "ggn, no L2, damping 1e-8", ek.scores(pr.Xq, pr.yq))
        del ek
    # Kronfluence, for reference
    if want("kronfluence"):
        kron_rows(rec, pr, lambda a: a.scores(pr.Xq, pr.yq), lambda S: pr.truth(S).score)


def kron_rows(rec, pr, work, metric, extra_fn=None):
    from adapters.base import Problem as PeerProblem
    from adapters.kronfluence_ import EKFAC, KFAC

    peer = PeerProblem(pr.model, pr.X, pr.y, pr.task.loss, pr.task.measurement, "loss", pr.task.weight_decay,
                       pr.n_classes)
    for cls in (EKFAC, KFAC):
        for damping in (1e-8, None):
            setting = "defaults (damping 1e-8)" if damping == 1e-8 else "damping None (0.1 × mean Λ)"
            if rec.has(f"Kronfluence {cls.method}", setting):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                adapter = cls(peer, damping_factor=damping)
                _, fit_s = timed(adapter.fit)
                out, work_s = timed(lambda: work(adapter))
                adapter.close()
            extra = {} if extra_fn is None else extra_fn(out)
            rec.add(f"Kronfluence {cls.method}", setting, metric(out), fit_s=fit_s, work_s=work_s, **extra)


# ---------------------------------------------------------------------------- mislabel
def study_mislabel(name: str, again: bool, only: set[str] | None) -> None:
    pr = P.mislabel_problem(name)
    rec = Recorder("mislabel", name, again)
    print(f"== mislabel {name}: n={pr.n}, p={pr.p}, {pr.info}", flush=True)
    store: dict[str, np.ndarray] = {}
    path = P.MODELS / f"selfinf-{name}.npz"
    if path.exists():
        store.update(dict(np.load(path)))

    def want(c: str) -> bool:
        return only is None or c in only

    def evaluate(candidate, setting, values, **extra):
        values = values.detach().double()
        key = f"{candidate} | {setting}"
        store[key] = values.numpy()
        ci = {}
        if "Kronfluence EK-FAC | defaults (damping 1e-8)" in store:
            d, lo, hi = P.paired_bootstrap_auc(values, torch.from_numpy(store["Kronfluence EK-FAC | defaults (damping 1e-8)"]),
                                               pr.flipped, draws=500)
            ci = {"diff_vs_kron": d, "ci_lo": lo, "ci_hi": hi}
        rec.add(candidate, setting, P.auc(values, pr.flipped), **ci, **extra)

    def save():
        P.MODELS.mkdir(parents=True, exist_ok=True)
        np.savez(path, **store)

    # Kronfluence first: it is the bar (paired CIs are against its defaults)
    if want("kronfluence"):
        def kron_metric(values):
            key = "Kronfluence EK-FAC | defaults (damping 1e-8)"
            if key not in store:
                store[key] = values.double().numpy()
            return P.auc(values, pr.flipped)
        kron_rows(rec, pr, lambda a: a.self_influence(), kron_metric)
        save()
    with torch.no_grad():
        loss = pr.task.loss(pr.model(pr.X.to(next(pr.model.parameters()).dtype)), pr.y)
    evaluate("training loss", "—", loss)
    if pr.p <= EXACT_MAX_P["mislabel"] and want("exact"):
        ex, fit_s = timed(lambda: ExactGGN(pr.model, pr.task, solver="eigh").fit(pr.X, pr.y))
        for wd_in in (True, False):
            ex.wd = pr.task.weight_decay if wd_in else 0.0
            for ratio in RATIOS:
                ex.set_damping(ratio)
                values, self_s = timed(ex.self_influence)
                evaluate("exact", f"{'' if wd_in else 'no L2, '}ratio {ratio:g}", values, damping=ex.damping,
                         fit_s=fit_s, self_s=self_s)
            ex.set_damping(None, 1e-8 if not wd_in else 0.0)
            evaluate("exact", "no L2, damping 1e-8" if not wd_in else "L2 only, damping 0", ex.self_influence())
        save()
        del ex
    if want("lowrank"):
        r_max = min(1000 if pr.p <= 10_000 else 400, pr.p // 2)  # time: p = 12–25k on one loaded core
        lr, fit_s = timed(lambda: LowRankTail(pr.model, pr.task, rank=r_max, passes=2).fit(pr.X, pr.y))
        for r in [r for r in RANKS if r <= r_max]:
            sub = lr.truncate(r)
            for ratio in RATIOS:
                sub.set_damping(ratio)
                evaluate(f"lowrank r={r}", f"tail mean, ratio {ratio:g}", sub.self_influence(), damping=sub.damping,
                         fit_s=fit_s)
        save()
        del lr
    for correct, cand in ((True, "ekfac"), (False, "kfac")):
        if not want(cand):
            continue
        for fisher in ("ggn", "sampled"):
            ek, fit_s = timed(lambda: EKFACEigen(pr.model, pr.task, correct=correct, fisher=fisher).fit(pr.X, pr.y))
            for wd_in in (True, False):
                ek.wd = pr.task.weight_decay if wd_in else 0.0
                ek.mean_eigenvalue = ek.trace / ek.p + ek.wd
                for ratio in RATIOS:
                    ek.set_damping(ratio)
                    values, self_s = timed(ek.self_influence)
                    evaluate(cand, f"{fisher}, {'' if wd_in else 'no L2, '}ratio {ratio:g}", values,
                             damping=ek.damping, fit_s=fit_s, self_s=self_s)
                ek.set_damping(None, 1e-8)
                evaluate(cand, f"{fisher}, {'' if wd_in else 'no L2, '}damping 1e-8", ek.self_influence())
            save()
            del ek


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["lds", "mislabel"])
    parser.add_argument("problems", help="comma-separated problem names")
    parser.add_argument("--only", default=None, help="comma-separated candidates (exact,lowrank,ekfac,kfac,kronfluence)")
    parser.add_argument("--again", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    warnings.filterwarnings("ignore")
    only = None if args.only is None else set(args.only.split(","))
    for name in args.problems.split(","):
        (study_lds if args.kind == "lds" else study_mislabel)(name, args.again, only)


if __name__ == "__main__":
    main()
