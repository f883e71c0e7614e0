"""`Attributor.top_k`'s scoring, fused (influence_kernels.score_topk) vs the unfused path.

Fits the default method (`method="auto"`) on three models and data sets, then times the part of
a `top_k` query after the solve, on the same preconditioned test features Q (the last n_test
training rows, as queries) and index:

- unfused (the path before the fused op): `scoring.top_k(scoring.score_blocks(Q, index), k)`,
  a block of Q @ Φᵀ (n_test × 8192) materialised, then torch.topk merges;
- fused: `scoring.streamed_top_k(Q, index, k)`, which runs the Triton kernel on CUDA and its
  torch twin elsewhere (the path `Attributor.top_k` takes now).

Models: an MLP 64-64-10 on scikit-learn's digits, a small CNN on the same 8×8 images (both
with jittered copies of the training images to reach --n-train rows), and a tiny GPT-2
language model on random token sequences. Speed is the ratio unfused / fused, measured in the
same process; the rankings are checked to agree (same scores to 1e-4, relative). Appends a
row per case to benchmarks/RESULTS.md (not with --smoke).

    OMP_NUM_THREADS=1 python benchmarks/topk_query.py [--device cuda] [--n-train 12000] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import influence as inf  # noqa: E402
from _results import append_section, markdown_table  # noqa: E402
from influence import scoring  # noqa: E402
from influence.demos.training import train_adam  # noqa: E402


def digits(n_train: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits (scaled to [0, 1]), with jittered copies up to n_train rows."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X, dtype=torch.float32) / 16, torch.tensor(y)
    g = torch.Generator().manual_seed(seed)
    reps = -(-n_train // len(X))
    copies = [X + 0.1 * torch.randn(X.shape, generator=g) for _ in range(reps - 1)]
    X = torch.cat([X, *copies])[:n_train]
    return X, y.repeat(reps)[:n_train]


def mlp_case(n_train, device):
    X, y = digits(n_train)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10))
    train_adam(model, X, y, inf.ClassificationTask(), epochs=100)
    return model.to(device), (X.to(device), y.to(device)), {}


def cnn_case(n_train, device):
    X, y = digits(n_train)
    X = X.reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10))
    train_adam(model, X, y, inf.ClassificationTask(), epochs=100)
    return model.to(device), (X.to(device), y.to(device)), {}


def lm_case(n_train, device):
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval().to(device)
    ids = torch.randint(0, 64, (max(64, n_train // 10), 12), device=device)
    return model, {"input_ids": ids, "labels": inf.token_labels(ids)}, dict(
        task=inf.LanguageModelingTask(), label_column="labels")


CASES = {"MLP digits": mlp_case, "CNN digits": cnn_case, "GPT-2 LM": lm_case}


def once_s(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def median_s(fns, repeats):
    """Median seconds of each fn, calls interleaved so that load from other processes on the
    machine falls on both alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            t.append(once_s(fn))
    return [statistics.median(t) for t in times]


def run_case(name, args, device):
    model, train, options = CASES[name](args.n_train, device)
    attr = inf.Attributor(model, train, progress=False, **options).fit()
    index, rows = attr.index, []
    for m in args.queries:
        if isinstance(train, dict):
            test = {key: v[-m:] for key, v in train.items()}
        else:
            test = tuple(v[-m:] for v in train)
        Q = attr._preconditioned(test)  # the query's solve, done once: only the scoring is timed
        unfused = lambda: scoring.top_k(scoring.score_blocks(Q, index), args.k)  # noqa: E731
        fused = lambda: scoring.streamed_top_k(Q, index, args.k)  # noqa: E731
        a, (b, path) = unfused(), fused()
        agree = all(torch.allclose(x.scores, z.scores, rtol=1e-4, atol=1e-6)
                    for x, z in ((a.helpful, b.helpful), (a.harmful, b.harmful)))
        t_unfused, t_fused = median_s([unfused, fused], args.repeats)
        rows.append([name, attr.method.name, index.n, index.dim, m, args.k, path,
                     f"{1e3 * t_unfused:.2f}", f"{1e3 * t_fused:.2f}",
                     f"{t_unfused / t_fused:.2f}x",
                     "yes" if agree else "NO"])
        print(" | ".join(str(v) for v in rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-train", type=int, default=12000)
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; nothing appended")
    args = parser.parse_args()
    if args.smoke:
        args.n_train, args.queries, args.repeats = 300, [3], 1
    header = ["model", "method", "n_train", "dim", "n_test", "k", "fused path", "unfused (ms)",
              "fused (ms)", "speed-up", "same ranking"]
    rows = [row for name in CASES for row in run_case(name, args, torch.device(args.device))]
    table = markdown_table(header, rows)
    print("\n".join(table))
    if not args.smoke:
        threads = os.environ.get("OMP_NUM_THREADS")
        note = (f"OMP_NUM_THREADS={threads}. Median of {args.repeats} interleaved runs of the "
                "scoring part of a top_k query after the solve, same Q and index; speed-up = "
                "unfused / fused.")
        append_section(f"topk_query: top_k scoring fused vs unfused, {args.device} "
                       "(benchmarks/topk_query.py)", [note, "", *table])
    return 0 if all(row[-1] == "yes" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
