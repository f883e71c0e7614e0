"""project: seeded on-the-fly random projection, twin vs Triton vs a pure-Python hash."""

import math

import pytest
import torch
from kernel_test_utils import BACKENDS, nan_padded, needs_interpreter, rel_err

from influence_kernels.projection import project, project_torch
from influence_kernels.projection import projection_rows


def py_entry(seed, i, j, k, dist):
    """R[i, j] from the documented formula, with Python ints (independent of the torch code)."""
    M = 0xFFFFFFFF

    def fmix(h):
        h ^= h >> 16
        h = h * 0x85EBCA6B & M
        h ^= h >> 13
        h = h * 0xC2B2AE35 & M
        return h ^ (h >> 16)

    seed &= (1 << 64) - 1
    s0 = fmix((seed & M) ^ 0x243F6A88)
    s1 = fmix((seed >> 32) ^ s0 ^ 0x85A308D3)
    h = fmix(fmix(i ^ s0) ^ ((j * 0x9E3779B9 + s1) & M))
    if dist == "rademacher":
        return (-1.0 if h >> 31 else 1.0) / math.sqrt(k)
    u1 = ((h >> 8) + 1) / 2**24
    u2 = (fmix(h ^ 0x68E31DA4) >> 8) / 2**24
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2) / math.sqrt(k)


def int_grads(n, p, dtype=torch.float32, seed=0):
    """Small-integer inputs: every sum with ±1 entries is exact, so orders of summation agree."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, (n, p), generator=g).to(dtype)


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3, -5])
def test_entries_match_python_reference(dist, seed):
    k, rows = 37, [0, 1, 2, 99, 123456, 2**31 - 1]
    R = torch.cat([projection_rows(i, i + 1, k, seed, dist, torch.float64) for i in rows])
    ref = torch.tensor([[py_entry(seed, i, j, k, dist) for j in range(k)] for i in rows], dtype=torch.float64)
    assert torch.allclose(R, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rademacher_entries_exact(backend, dtype):
    p, k = 50, 70
    R = project(torch.eye(p, dtype=dtype), k, seed=3, backend=backend)  # rows of R itself
    scale = torch.tensor(k ** -0.5, dtype=dtype)
    assert ((R == scale) | (R == -scale)).all()
    assert torch.equal(R, projection_rows(0, p, k, 3, dtype=dtype))
    assert 0.4 < (R > 0).double().mean() < 0.6


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,p,k", [(1, 1, 1), (5, 77, 33), (40, 200, 130)])
def test_triton_equals_twin_exactly_on_integer_inputs(dtype, n, p, k):
    g = int_grads(n, p, dtype, seed=n)
    out = project(g, k, seed=11, backend="triton")
    assert out.shape == (n, k) and out.dtype == dtype
    assert torch.equal(out, project_torch(g, k, seed=11))


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_gaussian_triton_matches_twin(dtype):
    g = torch.randn(9, 150, generator=torch.Generator().manual_seed(1)).to(dtype)
    out = project(g, 24, seed=5, backend="triton", dist="gaussian")
    ref = project_torch(g.double(), 24, seed=5, dist="gaussian")
    assert out.dtype == dtype
    assert rel_err(out, ref) < {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 1e-2)


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_twin_chunked_equals_unchunked(dist):
    p, k = 97, 20
    whole = projection_rows(0, p, k, 9, dist)
    parts = torch.cat([projection_rows(s, min(p, s + 10), k, 9, dist) for s in range(0, p, 10)])
    assert torch.equal(whole, parts)
    g = int_grads(6, p, torch.float64)
    ref = project_torch(g, k, 9, dist, chunk_rows=p)
    for chunk in (1, 7, 10, 1000):
        assert torch.allclose(project_torch(g, k, 9, dist, chunk_rows=chunk), ref, rtol=1e-13, atol=1e-13)
    if dist == "rademacher":
        assert torch.equal(project_torch(g, k, 9, dist, chunk_rows=7), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_result_different_seed_different(backend):
    g = torch.randn(4, 60, generator=torch.Generator().manual_seed(2))
    a = project(g, 16, seed=1, backend=backend)
    assert torch.equal(a, project(g, 16, seed=1, backend=backend))
    for other in (2, 1 + 2**32):  # the high seed word matters too
        assert not torch.allclose(a, project(g, 16, seed=other, backend=backend), atol=1e-3)


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_norm_preserved_in_expectation(dist):
    n, p, k = 200, 300, 64
    x = torch.randn(n, p, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ratio = project(x, k, seed=4, dist=dist).pow(2).sum(1) / x.pow(2).sum(1)
    # Each ratio has mean 1 and std ≈ sqrt(2/k) = 0.18 over the random R (JL lemma).
    assert abs(ratio.mean().item() - 1) < 0.1
    assert 0.1 < ratio.std().item() < 0.3
    R = projection_rows(0, 2000, k, 4, dist, torch.float64) * math.sqrt(k)
    assert abs(R.mean().item()) < 0.02 and abs(R.var().item() - 1) < 0.03  # entries ~ (0, 1)
    corr = torch.corrcoef(R.T)  # columns of R are uncorrelated
    assert (corr - torch.eye(k, dtype=torch.float64)).abs().max() < 0.15


def test_columns_do_not_depend_on_k():
    g = torch.randn(3, 40, dtype=torch.float64)
    big = project(g, 32, seed=6) * math.sqrt(32)
    small = project(g, 8, seed=6) * math.sqrt(8)
    assert torch.allclose(big[:, :8], small, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_nan_padded_input(backend):
    g = int_grads(7, 45)
    ref = project_torch(g, 19, seed=8)
    assert torch.equal(project(nan_padded(g), 19, seed=8, backend=backend), ref)
    assert torch.equal(project(g.T.contiguous().T, 19, seed=8, backend=backend), ref)


def test_empty_inputs():
    assert project(torch.ones(0, 5), 3, seed=0).shape == (0, 3)
    assert torch.equal(project(torch.ones(2, 0), 3, seed=0), torch.zeros(2, 3))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(k=0), ValueError, "k"),
        (dict(k=2.0), TypeError, "k"),
        (dict(k=True), TypeError, "k"),
        (dict(seed="a"), TypeError, "seed"),
        (dict(dist="uniform"), ValueError, "dist"),
        (dict(grads=torch.ones(3)), ValueError, "grads"),
        (dict(grads=torch.ones(3, 2, dtype=torch.int64)), TypeError, "grads"),
        (dict(backend="gpu"), ValueError, "backend"),
        (dict(input_precision="bf16"), ValueError, "input_precision"),
    ],
)
def test_input_validation(kwargs, error, match):
    args = dict(grads=torch.ones(3, 4), k=2, seed=0) | kwargs
    with pytest.raises(error, match=match):
        project(**args)
