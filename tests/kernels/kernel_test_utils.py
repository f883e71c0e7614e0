"""Helpers shared by the kernel tests (imported as a plain module: tests/kernels is on sys.path)."""

import pytest
import torch

from influence_kernels._backend import interpreted

needs_interpreter = pytest.mark.skipif(not interpreted(), reason="needs triton with TRITON_INTERPRET=1")
BACKENDS = ["torch", pytest.param("triton", marks=needs_interpreter)]


def nan_padded(t: torch.Tensor) -> torch.Tensor:
    """A non-contiguous view holding t's values inside a larger NaN-filled buffer.

    Every leading dim gets a NaN border and the last dim has stride 2 with NaNs in between, so
    any out-of-bounds or wrong-stride read shows up as NaN in the result.
    """
    *lead, last = t.shape
    buf = torch.full((*[s + 2 for s in lead], 2 * last + 3), float("nan"), dtype=t.dtype)
    view = buf[tuple(slice(1, 1 + s) for s in lead) + (slice(1, 1 + 2 * last, 2),)]
    view.copy_(t)
    assert not view.is_contiguous()
    return view


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
