"""ce_head_hvp against an explicit float64 autograd Hessian and the float64 twin."""

import functools

import pytest
import torch
import torch.nn.functional as F
from kernel_test_utils import BACKENDS, TOL, nan_padded, needs_interpreter, rel_err

from influence_kernels.ce_head import ce_head_hvp, ce_head_hvp_torch


def make_problem(n, d, C, k, dtype=torch.float64, bias=False, seed=0):
    """Features, head weights, probabilities softmax(Φ·Wᵀ) and k directions."""
    g = torch.Generator().manual_seed(seed)
    D = d + int(bias)
    phi = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = torch.randn(C, D, generator=g, dtype=torch.float64)
    logits = phi @ W[:, :d].T + (W[:, d] if bias else 0)
    probs = torch.softmax(logits, dim=1)
    V = torch.randn(k, C, D, generator=g, dtype=torch.float64)
    return phi.to(dtype), W, probs.to(dtype), V.to(dtype)


@functools.cache
def autograd_hessian(n, d, C, bias):
    """Explicit float64 Hessian (C·D × C·D) of the mean CE in W at make_problem's W."""
    phi, W, _, _ = make_problem(n, d, C, 1, bias=bias)
    if bias:
        phi = torch.cat([phi, torch.ones(n, 1, dtype=phi.dtype)], dim=1)
    y = torch.arange(n) % C  # the Hessian does not depend on the labels
    H = torch.func.hessian(lambda w: F.cross_entropy(phi @ w.T, y))(W)
    return H.reshape(W.numel(), W.numel())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("C,bias", [(1, False), (3, True), (37, False), (100, True)])
def test_matches_autograd_hessian(backend, dtype, C, bias):
    n, d = (13, 7) if C < 100 else (9, 4)
    phi, _, probs, V = make_problem(n, d, C, k=2, dtype=dtype, bias=bias)
    H = autograd_hessian(n, d, C, bias)
    ref = (V.double().reshape(2, -1) @ H.T).reshape(V.shape) + 0.25 * V.double()
    out = ce_head_hvp(phi, probs, V, damping=0.25, backend=backend, bias=bias)
    assert out.shape == V.shape and out.dtype == dtype
    assert rel_err(out, ref) < TOL[dtype]


@needs_interpreter
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,d,C,k", [(150, 45, 100, 1), (70, 33, 10, 8)])
def test_triton_matches_twin(deterministic, dtype, n, d, C, k):
    # n, d, C are not multiples of any block size; C=100 takes the two-pass path (> 64).
    phi, _, probs, V = make_problem(n, d, C, k, dtype=dtype, seed=1)
    ref = ce_head_hvp_torch(phi.double(), probs.double(), V.double(), damping=0.1)
    out = ce_head_hvp(phi, probs, V, damping=0.1, backend="triton", deterministic=deterministic)
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [False, True])
def test_strided_nan_padded_inputs(backend, bias):
    phi, _, probs, V = make_problem(40, 19, 37, 3, bias=bias, seed=2)
    ref = ce_head_hvp_torch(phi, probs, V, damping=0.5, bias=bias)
    phi_cm = phi.T.contiguous().T  # column-major
    for args in [(nan_padded(phi), nan_padded(probs), nan_padded(V)), (phi_cm, probs.T.contiguous().T, V)]:
        out = ce_head_hvp(*args, damping=0.5, backend=backend, bias=bias)
        assert torch.isfinite(out).all()
        assert rel_err(out, ref) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_symmetric_and_positive_semidefinite(backend):
    phi, _, probs, UV = make_problem(31, 11, 7, 6, seed=3)
    H = lambda v: ce_head_hvp(phi, probs, v, backend=backend)  # noqa: E731
    HUV = H(UV)
    gram = torch.einsum("icd,jcd->ij", UV, HUV)  # <u_i, H u_j>
    assert torch.allclose(gram, gram.T, rtol=1e-12, atol=1e-14)
    assert torch.linalg.eigvalsh(gram).min() > -1e-12
    # Softmax invariance: adding the same vector to every class's row leaves logits' softmax
    # unchanged, so H annihilates it. Checks the rowsum term of the Jacobian step.
    shift = torch.randn(1, 11, dtype=torch.float64).expand(7, 11)
    assert H(shift.contiguous()).abs().max() < 1e-14


@pytest.mark.parametrize("backend", BACKENDS)
def test_bias_flag_equals_ones_column(backend):
    phi, _, probs, V = make_problem(23, 6, 5, 2, bias=True, seed=4)
    ones = torch.cat([phi, torch.ones(23, 1, dtype=phi.dtype)], dim=1)
    ref = ce_head_hvp_torch(ones, probs, V)
    out = ce_head_hvp(phi, probs, V, backend=backend, bias=True)
    assert rel_err(out, ref) < 1e-12
    assert rel_err(ce_head_hvp(ones, probs, V, backend=backend), ref) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_direction_and_damping(backend):
    phi, _, probs, V = make_problem(17, 9, 4, 1, seed=5)
    batched = ce_head_hvp(phi, probs, V, backend=backend)
    single = ce_head_hvp(phi, probs, V[0], backend=backend)
    assert single.shape == (4, 9)
    assert torch.allclose(single, batched[0], rtol=1e-14, atol=0)
    damped = ce_head_hvp(phi, probs, V[0], damping=3.0, backend=backend)
    assert torch.allclose(damped - single, 3.0 * V[0], rtol=1e-12, atol=1e-14)


@needs_interpreter
def test_deterministic_is_bit_identical():
    phi, _, probs, V = make_problem(200, 21, 12, 2, dtype=torch.float32, seed=6)
    runs = [ce_head_hvp(phi, probs, V, backend="triton", deterministic=True) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32(dtype):
    phi, _, probs, V = make_problem(50, 20, 10, 2, dtype=dtype, seed=7)
    ref = ce_head_hvp_torch(phi.double(), probs.double(), V.double())
    for backend in ("torch", "triton"):
        out = ce_head_hvp(phi, probs, V, backend=backend)
        assert out.dtype == dtype
        assert rel_err(out, ref) < 1e-2  # output rounding to 8/11 mantissa bits


@needs_interpreter
def test_mixed_dtypes_promote():
    phi, _, probs, V = make_problem(20, 8, 3, 1, seed=8)
    out = ce_head_hvp(phi.float(), probs, V, backend="triton")
    assert out.dtype == torch.float64
    assert rel_err(out, ce_head_hvp_torch(phi.float().double(), probs, V)) < 1e-12


@needs_interpreter
@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
def test_tf32_precision_accepted(precision):
    phi, _, probs, V = make_problem(20, 8, 3, 1, dtype=torch.float32, seed=9)
    out = ce_head_hvp(phi, probs, V, backend="triton", input_precision=precision)
    assert rel_err(out, ce_head_hvp_torch(phi, probs, V)) < 1e-2


def test_twin_matches_autograd_hvp_of_loss():
    """Independent of the formula: double backward through the CE loss of the head."""
    phi, W, probs, V = make_problem(25, 6, 4, 1, seed=10)
    y = torch.arange(25) % 4
    _, hv = torch.autograd.functional.hvp(lambda w: F.cross_entropy(phi @ w.T, y), W, V[0])
    assert rel_err(ce_head_hvp_torch(phi, probs, V[0]), hv) < 1e-12


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(phi=[[1.0]]), TypeError, "phi"),
        (dict(phi=torch.ones(4, 3, dtype=torch.int64)), TypeError, "phi"),
        (dict(phi=torch.ones(4)), ValueError, "phi"),
        (dict(probs=torch.ones(5, 2)), ValueError, "probs"),
        (dict(V=torch.ones(2, 4)), ValueError, "V"),
        (dict(V=torch.ones(0, 2, 3)), ValueError, "V"),
        (dict(phi=torch.ones(0, 3), probs=torch.ones(0, 2)), ValueError, "phi"),
        (dict(damping=float("nan")), TypeError, "damping"),
        (dict(damping="0.1"), TypeError, "damping"),
        (dict(backend="cuda"), ValueError, "backend"),
        (dict(input_precision="fast"), ValueError, "input_precision"),
        (dict(deterministic=1), TypeError, "deterministic"),
        (dict(bias=None), TypeError, "bias"),
    ],
)
def test_input_validation(change, error, match):
    args = dict(phi=torch.ones(4, 3), probs=torch.ones(4, 2) / 2, V=torch.ones(2, 3)) | change
    with pytest.raises(error, match=match):
        ce_head_hvp(**args)
