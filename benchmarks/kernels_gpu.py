"""GPU benchmark of the Triton kernels in kernels/ against their torch twins.

    PYTHONPATH=. python benchmarks/kernels_gpu.py           # one CUDA GPU; < 5 minutes on an H100
    PYTHONPATH=. python benchmarks/kernels_gpu.py --smoke   # tiny shapes on CPU through the Triton
                                                            # interpreter: tests this script only

1. Correctness on the device: every Triton variant against the float64 torch twin (float32 to
   1e-5 relative, tf32 to 5e-3, float64 to 1e-12; projections bit-equal on integer inputs).
2. Medians from ``triton.testing.do_bench`` for ce_head_hvp at (n, d, C, k) in CE_SHAPES:
   torch eager (the twin), ``torch.compile`` of the twin, Triton atomic, Triton deterministic
   and Triton atomic with tf32; and for project at (n, p, k) = PROJ_SHAPE: the twin (R
   generated in chunks, timed once: it is slow) vs the Triton kernels; and for score_topk at
   (m, n, d, k) in TOPK_SHAPES (a top_k query streamed over the index in blocks of 8192 rows, as
   `Attributor.top_k` does): the eager twin (Q @ Fᵀ, then torch.topk merges) vs the fused Triton
   kernel. GB/s and TFLOP/s are set against the copy bandwidth and float32 matmul rate measured
   in the same run.

Writes JSON lines to $OUT/kernels_gpu.jsonl (OUT defaults to ./out) and appends the table to
benchmarks/RESULTS.md. Without CUDA it prints a message and exits with code 0.
"""

from __future__ import annotations

import os
import sys

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from influence_kernels import ce_head, projection, score_topk, softmax_jacobian  # noqa: E402
from _results import append_section, machine, markdown_table  # noqa: E402

if SMOKE:
    CE_SHAPES = [(40, 24, 10, 1), (70, 33, 100, 2)]
    PROJ_SHAPE = (4, 1000, 64)
    TOPK_SHAPES = [(5, 300, 40, 7)]
else:
    CE_SHAPES = [(512, 512, 10, 1), (50000, 512, 10, 1), (50000, 512, 10, 16), (8192, 4096, 1000, 1)]
    PROJ_SHAPE = (32, 10**7, 4096)  # (n, p, k): 1.3 GB of float32 gradients
    TOPK_SHAPES = [(16, 200_000, 2048, 10), (512, 200_000, 2048, 10), (1000, 50_000, 512, 100)]
TOPK_BLOCK = 8192  # training rows per call, as influence.scoring.BLOCK_ROWS
COMPILE_BUDGET_S = 200  # skip further torch.compile variants past this many seconds
T0 = time.time()


def bench_ms(fn, slow=False):
    """Median milliseconds of fn(). slow=True: one timed call (for multi-second baselines)."""
    if SMOKE:
        fn()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3
    if slow:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def reference_rates(dev):
    """Copy bandwidth (GB/s, read + write) and float32 (IEEE, no tf32) matmul rate (TFLOP/s)."""
    numel, m = (1 << 20, 256) if SMOKE else (1 << 28, 8192)
    src = torch.randn(numel, device=dev)
    dst = torch.empty_like(src)
    gbps = 2 * src.numel() * 4 / bench_ms(lambda: dst.copy_(src)) / 1e6
    a, b = torch.randn(m, m, device=dev), torch.randn(m, m, device=dev)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    tflops = 2 * m**3 / bench_ms(lambda: a @ b) / 1e9
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return gbps, tflops


def ce_case(n, d, C, k, dev):
    g = torch.Generator(device=dev).manual_seed(0)
    phi = torch.randn(n, d, device=dev, generator=g)
    W = torch.randn(C, d, device=dev, generator=g) / d**0.5
    probs = torch.softmax(phi @ W.T, dim=1)
    V = torch.randn(k, C, d, device=dev, generator=g)
    ref = ce_head.ce_head_hvp_torch(phi.double(), probs.double(), V.double(), damping=1e-3)
    tri = lambda **kw: (lambda: ce_head.ce_head_hvp(phi, probs, V, 1e-3, backend="triton", **kw))  # noqa: E731
    variants = {
        "torch eager": (lambda: ce_head.ce_head_hvp_torch(phi, probs, V, 1e-3), 1e-5),
        "torch.compile": (None, 1e-5),
        "triton atomic": (tri(), 1e-5),
        "triton deterministic": (tri(deterministic=True), 1e-5),
        "triton atomic tf32": (tri(input_precision="tf32"), 5e-3),
    }
    if not SMOKE and time.time() - T0 < COMPILE_BUDGET_S:
        compiled = torch.compile(ce_head.ce_head_hvp_torch, dynamic=False)
        variants["torch.compile"] = (lambda: compiled(phi, probs, V, 1e-3), 1e-5)
    flops = 4 * n * C * d * k  # Z = Φ·Vᵀ and Aᵀ·Φ
    nbytes = 4 * (n * d + n * C + 2 * k * C * d)  # read Φ, P, V; write H·V
    yield from run_variants("ce_head_hvp", dict(n=n, d=d, C=C, k=k), variants, ref, flops, nbytes)


def run_variants(op, shape, variants, ref, flops, nbytes):
    """Check each variant against ref, then time it; yields one record per variant."""
    base = None
    for name, (fn, tol) in variants.items():
        rec = dict(op=op, **shape, variant=name)
        if fn is None:
            rec["error"] = "skipped"
            yield rec
            continue
        try:
            out = fn()
            rec["rel_err"] = rel_err(out, ref)
            rec["ok"] = bool(rec["rel_err"] <= tol)
            del out
            rec["ms"] = bench_ms(fn)
        except Exception as e:  # record and go on: one broken variant must not hide the rest
            rec["error"] = f"{type(e).__name__}: {e}"[:300]
            rec["ok"] = False
            yield rec
            continue
        base = base or rec["ms"]
        rec["speedup"] = base / rec["ms"]
        rec["gbps"] = nbytes / rec["ms"] / 1e6
        rec["tflops"] = flops / rec["ms"] / 1e9
        yield rec


def proj_case(n, p, k, dev):
    g = torch.Generator(device=dev).manual_seed(1)
    grads = torch.randn(n, p, device=dev, generator=g)
    head = grads[:, : min(p, 10**5)]  # the float64 check runs on a slice of the columns
    errs = {dist: rel_err(projection.project(head, k, 3, backend="triton", dist=dist),
                          projection.project_torch(head.double(), k, 3, dist=dist))
            for dist in ("rademacher", "gaussian")}
    ints = grads[:8, :5000].round()  # integer inputs: sums are exact, so twin and kernel must agree bitwise
    exact = torch.equal(projection.project(ints, 64, 5, backend="triton"), projection.project_torch(ints, 64, 5))
    print(f"project check: rel err rademacher {errs['rademacher']:.1e}, gaussian {errs['gaussian']:.1e}; "
          f"bit-equal on integer inputs: {exact}", flush=True)
    variants = {
        "torch chunked R": lambda: projection.project_torch(grads, k, 3),
        "triton rademacher": lambda: projection.project(grads, k, 3, backend="triton"),
        "triton gaussian": lambda: projection.project(grads, k, 3, backend="triton", dist="gaussian"),
        "triton rademacher tf32": lambda: projection.project(grads, k, 3, backend="triton", input_precision="tf32"),
    }
    base = None
    for name, fn in variants.items():
        rec = dict(op="project", n=n, p=p, k=k, variant=name, ok=exact and max(errs.values()) < 1e-5)
        try:
            if name.startswith("torch"):
                projection.project_torch(grads[:, :1000], k, 3)  # warm-up on a slice, then one timed call
                rec["ms"] = bench_ms(fn, slow=True)
            else:
                rec["ms"] = bench_ms(fn)
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {e}"[:300]
            rec["ok"] = False
            yield rec
            continue
        base = base or rec["ms"]
        rec["speedup"] = base / rec["ms"]
        rec["gbps"] = 4 * (n * p + n * k) / rec["ms"] / 1e6
        rec["tflops"] = 2 * n * p * k / rec["ms"] / 1e9
        yield rec


def streamed_topk(Q, F, k, backend):
    """A top_k query over F in blocks; returns the helpful and harmful scores side by side."""
    running = None
    for lo in range(0, F.shape[0], TOPK_BLOCK):
        running = score_topk.score_topk(Q, F[lo:lo + TOPK_BLOCK], k, lo, running, backend=backend)
    return torch.cat([running[0], running[2]], dim=1)


def topk_case(m, n, d, k, dev):
    g = torch.Generator(device=dev).manual_seed(3)
    Q, F = torch.randn(m, d, device=dev, generator=g), torch.randn(n, d, device=dev, generator=g)
    ref = streamed_topk(Q.double(), F.double(), k, "torch")
    variants = {"torch eager (Q @ F^T, topk merge)": (lambda: streamed_topk(Q, F, k, "torch"), 1e-5),
                "triton fused score+top-k": (lambda: streamed_topk(Q, F, k, "triton"), 1e-5)}
    yield from run_variants("score_topk", dict(n=n, d=d, k=k, m=m), variants, ref, 2 * m * n * d,
                            4 * (n * d + m * d))


def fp64_check(dev):
    g = torch.Generator(device=dev).manual_seed(2)
    phi = torch.randn(333, 77, device=dev, dtype=torch.float64, generator=g)
    probs = torch.softmax(torch.randn(333, 37, device=dev, dtype=torch.float64, generator=g), 1)
    V = torch.randn(3, 37, 77, device=dev, dtype=torch.float64, generator=g)
    ref = ce_head.ce_head_hvp_torch(phi, probs, V, 0.1)
    errs = [rel_err(ce_head.ce_head_hvp(phi, probs, V, 0.1, backend="triton", deterministic=det), ref)
            for det in (False, True)]
    Z = torch.randn(5, 333, 37, device=dev, dtype=torch.float64, generator=g)
    errs.append(rel_err(softmax_jacobian.softmax_jacobian_vp(probs, Z, backend="triton"),
                        softmax_jacobian.softmax_jacobian_vp_torch(probs, Z)))
    det = [ce_head.ce_head_hvp(phi.float(), probs.float(), V.float(), backend="triton", deterministic=True)
           for _ in range(2)]
    ok = max(errs) < 1e-12 and torch.equal(det[0], det[1])
    print(f"float64 check (atomic, deterministic, softmax_jacobian_vp): {', '.join(f'{e:.1e}' for e in errs)}; "
          f"deterministic bit-identical: {torch.equal(det[0], det[1])} -> {'ok' if ok else 'FAIL'}", flush=True)
    return dict(op="float64 check", rel_errs=errs, ok=ok)


def fmt(rec, copy_gbps, mm_tflops):
    shape = ", ".join(str(rec[key]) for key in ("m", "n", "p", "d", "C", "k") if key in rec)
    if "ms" not in rec:
        return [rec["op"], f"({shape})", rec["variant"], rec.get("error", "?"), "", "", "", ""]
    return [rec["op"], f"({shape})", rec["variant"], f"{rec['ms']:.3f}", f"{rec['speedup']:.2f}x",
            f"{rec['gbps']:.0f} ({100 * rec['gbps'] / copy_gbps:.0f}%)",
            f"{rec['tflops']:.2f} ({100 * rec['tflops'] / mm_tflops:.0f}%)",
            f"{rec['rel_err']:.1e}" if "rel_err" in rec else ("ok" if rec.get("ok") else "FAIL")]


def main():
    if not torch.cuda.is_available() and not SMOKE:
        print("benchmarks/kernels_gpu.py: no CUDA device found; nothing to do (run it on a GPU machine).")
        return 0
    dev = torch.device("cpu" if SMOKE else "cuda")
    out_dir = os.environ.get("OUT", "out")
    os.makedirs(out_dir, exist_ok=True)
    import triton

    env = dict(device=machine(), torch=torch.__version__, triton=triton.__version__, smoke=SMOKE)
    print(f"{env['device']}", flush=True)
    copy_gbps, mm_tflops = reference_rates(dev)
    print(f"measured copy bandwidth {copy_gbps:.0f} GB/s, float32 matmul {mm_tflops:.1f} TFLOP/s", flush=True)
    records = [dict(op="reference", copy_gbps=copy_gbps, matmul_fp32_tflops=mm_tflops), fp64_check(dev)]
    header = ["op", "shape", "variant", "ms", "speed-up", "GB/s (% copy)", "TFLOP/s (% fp32 mm)", "rel err"]
    rows = []
    cases = [ce_case(*shape, dev) for shape in CE_SHAPES] + [proj_case(*PROJ_SHAPE, dev)]
    cases += [topk_case(*shape, dev) for shape in TOPK_SHAPES]
    for case in cases:
        for rec in case:
            records.append(rec)
            rows.append(fmt(rec, copy_gbps, mm_tflops))
            print(" | ".join(rows[-1]), flush=True)
        torch.cuda.empty_cache() if dev.type == "cuda" else None
    with open(os.path.join(out_dir, "kernels_gpu.jsonl"), "a") as f:
        for rec in records:
            f.write(json.dumps({**env, **rec}) + "\n")
    table = markdown_table(header, rows)
    print("\n".join(table))
    failed = [r for r in records if r.get("ok") is False and r.get("error") != "skipped"]
    if not SMOKE:
        append_section("kernels Triton vs torch, float32 (benchmarks/kernels_gpu.py)", [
            f"Measured copy bandwidth {copy_gbps:.0f} GB/s, float32 (IEEE) matmul {mm_tflops:.1f} TFLOP/s. "
            "Speed-up is against the first row of each shape (torch eager twin). GB/s counts the "
            "minimal traffic (Φ, P, V in, H·V out), TFLOP/s counts 4·n·C·d·k (2·n·p·k for project, "
            "2·m·n·d for score_topk, whose shape is (m test rows, n train, d, k)). "
            f"Correctness failures: {len(failed)}.", "", *table])
    print(f"done in {time.time() - T0:.0f} s; {len(failed)} correctness failure(s); JSON lines in {out_dir}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
