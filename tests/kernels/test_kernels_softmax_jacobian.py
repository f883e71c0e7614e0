"""softmax_jacobian_vp against the explicit per-row matrix diag(p) − p pᵀ."""

import pytest
import torch
import torch.nn.functional as F
from kernel_test_utils import BACKENDS, TOL, nan_padded, needs_interpreter, rel_err

from influence_kernels.softmax_jacobian import softmax_jacobian_vp, softmax_jacobian_vp_torch


def explicit(probs, Z):
    """(diag(p) − p pᵀ)·z row by row, as float64 matrices."""
    p, z = probs.double(), Z.double()
    H = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return (H @ z.unsqueeze(-1)).squeeze(-1)


def make(n, C, dtype=torch.float64, lead=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, C, generator=g, dtype=torch.float64) * 2, dim=1)
    Z = torch.randn(*lead, n, C, generator=g, dtype=torch.float64)
    return probs.to(dtype), Z.to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,C", [(5, 1), (9, 3), (33, 37), (20, 100), (3, 1500)])
def test_matches_explicit_hessian(backend, dtype, n, C):
    probs, Z = make(n, C, dtype)  # C=1500 > 1024 takes the two-pass path in Triton
    out = softmax_jacobian_vp(probs, Z, backend=backend)
    assert out.shape == Z.shape and out.dtype == dtype
    ref = explicit(probs, Z)
    if C == 1:  # one class: the Hessian is exactly zero
        assert out.abs().max() == 0
    else:
        assert rel_err(out, ref) < TOL[dtype]


def test_is_hessian_of_cross_entropy_in_logits():
    g = torch.Generator().manual_seed(1)
    logits, z = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    H = torch.autograd.functional.hessian(lambda s: F.cross_entropy(s[None], torch.tensor([2])), logits)
    out = softmax_jacobian_vp_torch(torch.softmax(logits, 0)[None], z[None])[0]
    assert rel_err(out, H @ z) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_probs_strided_and_nan_padded(backend):
    probs, Z = make(11, 13, lead=(3,), seed=2)  # Z: (3, 11, 13) directions, probs: (11, 13)
    ref = explicit(probs.expand(3, 11, 13), Z)
    out = softmax_jacobian_vp(nan_padded(probs), nan_padded(Z), backend=backend)
    assert torch.isfinite(out).all() and rel_err(out, ref) < 1e-12
    z_strided = Z.transpose(0, 1).contiguous().transpose(0, 1)  # not viewable as (33, 13)
    full = softmax_jacobian_vp(probs.expand(3, 11, 13).contiguous(), z_strided, backend=backend)
    assert rel_err(full, ref) < 1e-12


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype):
    probs, Z = make(8, 10, dtype, seed=3)
    ref = explicit(probs, Z)
    for backend in ("torch", "triton"):
        out = softmax_jacobian_vp(probs, Z, backend=backend)
        assert out.dtype == dtype and rel_err(out, ref) < 1e-2


@pytest.mark.parametrize(
    "probs,Z,error,match",
    [
        (torch.ones(3, 4), torch.ones(3, 5), ValueError, "probs"),
        (torch.ones(2, 3, 4), torch.ones(3, 3, 4), ValueError, "probs"),
        ([[1.0]], torch.ones(1, 1), TypeError, "probs"),
        (torch.ones(3, 4), torch.ones(3, 4, dtype=torch.int32), TypeError, "Z"),
    ],
)
def test_input_validation(probs, Z, error, match):
    with pytest.raises(error, match=match):
        softmax_jacobian_vp(probs, Z)
