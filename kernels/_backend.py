"""What every op shares: the optional triton import, backend choice and input checks.

Triton is optional. When it is missing, ``jit`` is a no-op decorator and ``tl`` a stand-in
whose only use is the ``tl.constexpr`` annotations, so the op modules still import and the
torch twins still run. Triton decides between compiling and interpreting when a kernel is
*decorated*, i.e. when ``kernels`` is imported: set ``TRITON_INTERPRET=1`` before that to run
the Triton kernels on CPU tensors.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = SimpleNamespace(constexpr=None, float32=None, float64=None)

    def jit(fn=None, **options):
        return fn if fn is not None else (lambda f: f)
else:
    jit = triton.jit

BACKENDS = ("auto", "torch", "triton")
ENV_BACKEND = "INFLUENCE_KERNELS_BACKEND"
PRECISIONS = ("ieee", "tf32", "tf32x3")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@jit
def _probe():
    pass


def interpreted() -> bool:
    """True when triton is installed and its kernels run in the CPU interpreter."""
    return triton is not None and type(_probe).__name__ == "InterpretedFunction"


def _differentiating(tensors) -> bool:
    """True under autograd recording or a torch.func transform (vmap, grad, jvp)."""
    transforms = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)()
    return transforms or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def use_triton(backend: str, tensors) -> bool:
    """Decide whether an op runs its Triton kernel (True) or its torch twin (False).

    ``backend="torch"`` always picks the twin. ``"auto"`` picks Triton when every tensor is on
    CUDA, triton imports, no input requires grad and no torch.func transform is active (the
    Triton paths are neither differentiable nor batchable; the twins are). The environment
    variable ``INFLUENCE_KERNELS_BACKEND`` overrides ``"auto"``: ``torch`` forces the twin,
    ``triton`` acts as ``backend="triton"`` except that differentiated inputs still go to the
    twin. ``"triton"`` insists and raises when it cannot run: no triton, differentiated inputs,
    or CPU tensors without ``TRITON_INTERPRET=1``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    grad = _differentiating(tensors)
    if backend == "auto":
        forced = os.environ.get(ENV_BACKEND, "auto").strip().lower() or "auto"
        if forced not in BACKENDS:
            raise ValueError(f"environment variable {ENV_BACKEND} must be one of {BACKENDS}, "
                             f"got {forced!r}")
        if forced == "torch" or triton is None or grad:
            return False
        if forced == "auto":
            return all(t.is_cuda for t in tensors) and not interpreted()
        backend = "triton"
    if backend == "torch":
        return False
    if triton is None:
        raise ValueError("backend='triton' needs the triton package; install it or use backend='torch'")
    if grad:
        raise ValueError("backend='triton' is not differentiable and an input requires grad (or a "
                         "torch.func transform is active); use backend='torch' or 'auto'")
    if all(t.is_cuda for t in tensors):
        if interpreted():
            raise ValueError("backend='triton' with CUDA tensors, but triton runs in interpreter mode "
                             "(TRITON_INTERPRET=1); use CPU tensors or unset it")
        return True
    if any(t.is_cuda for t in tensors):
        raise ValueError("backend='triton': all tensors must be on the same device")
    if not interpreted():
        raise ValueError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton "
                         "is imported; use backend='torch' (or 'auto') on CPU")
    return True


def check_float(name: str, t, ndims: tuple[int, ...]) -> None:
    """Raise TypeError/ValueError unless ``t`` is a floating tensor with one of ``ndims`` dims."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {t.dtype}")
    if t.dim() not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")


def check_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def check_precision(input_precision: str) -> None:
    if input_precision not in PRECISIONS:
        raise ValueError(f"input_precision must be one of {PRECISIONS}, got {input_precision!r}")


def acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Accumulation dtype: float64 if any input is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def next_pow2(x: int, lo: int, hi: int) -> int:
    """Smallest power of two >= x, clamped to [lo, hi] (tl.dot needs every block dim >= 16)."""
    return max(lo, min(hi, 1 << max(0, math.ceil(math.log2(max(x, 1))))))


def num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1
