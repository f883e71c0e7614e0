"""Random projection of per-example gradients with an on-the-fly, counter-based matrix.

``project(grads, k, seed)`` returns ``grads @ R`` (n×p → n×k) where every entry of R (p×k) is a
pure function of (seed, row i, column j)::

    h  = fmix32(fmix32(i ⊕ s0) ⊕ (j·0x9E3779B9 + s1))       (uint32 arithmetic)
    rademacher: R[i, j] = ±1/√k, the sign being the top bit of h
    gaussian:   R[i, j] = √(−2·ln u1)·cos(2π·u2)/√k  (Box–Muller), u1 = (⌊h/2⁸⌋ + 1)/2²⁴,
                u2 = ⌊fmix32(h ⊕ 0x68E31DA4)/2⁸⌋/2²⁴

with ``fmix32`` the MurmurHash3 finaliser and (s0, s1) derived from the 64-bit seed. The 1/√k
scale makes E[R Rᵀ] = I, so E[‖x·R‖²] = ‖x‖². The Triton kernel generates each R block in
registers and never stores R; the torch twin generates R a chunk of rows at a time with int64
ops masked to 32 bits. Same seed → same R on every device and run: Rademacher entries are
bit-identical between twin and kernel, Gaussian ones agree to float rounding (log/cos). Column
j of R does not depend on k: the first k' columns of a k-projection are a k'-projection up to
the scale. Row indices are 32-bit, so p < 2³¹.
"""

from __future__ import annotations

import torch

from influence_kernels._backend import (acc_dtype, check_float, check_precision, jit, next_pow2, num_sms, tl, tl_dtype,
                              triton, use_triton)
from influence_kernels._reduce import sum_partials

DISTS = ("rademacher", "gaussian")
_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_SALT = 0x68E31DA4


@jit
def _fmix32(h):
    h ^= h >> 16
    h *= 0x85EBCA6B
    h ^= h >> 13
    h *= 0xC2B2AE35
    h ^= h >> 16
    return h


@jit
def _r_block(ps, cs, s0, s1, GAUSSIAN: tl.constexpr, ACC: tl.constexpr):
    """Unscaled R[ps, cs] as an ACC block (len(ps) × len(cs))."""
    i = ps.to(tl.uint32)[:, None]
    j = cs.to(tl.uint32)[None, :]
    h = _fmix32(_fmix32(i ^ s0) ^ (j * 0x9E3779B9 + s1))
    if GAUSSIAN:
        u1 = ((h >> 8) + 1).to(ACC) * (1.0 / 16777216.0)
        u2 = (_fmix32(h ^ 0x68E31DA4) >> 8).to(ACC) * (1.0 / 16777216.0)
        r = tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)
    else:
        r = tl.where((h >> 31) == 1, -1.0, 1.0)
    return r.to(ACC)


@jit(do_not_specialize=["s0", "s1"])  # seed words are plain i32 even when equal to 1
def _project_kernel(
    g_ptr, out_ptr, n, p, k, s_gn, s_gp, s_os, s_on, s_ok, s0, s1, blocks_per_split,
    BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
    GAUSSIAN: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):
    """out[split, rows, cols] = grads[rows, p-range of split] @ R[p-range, cols] (unscaled)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cs = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    split = tl.program_id(2)
    seed0 = s0.to(tl.uint32, bitcast=True)
    seed1 = s1.to(tl.uint32, bitcast=True)
    b_start = split * blocks_per_split
    b_stop = tl.minimum(b_start + blocks_per_split, tl.cdiv(p, BLOCK_P))
    acc = tl.zeros((BLOCK_N, BLOCK_K), ACC)
    for b in range(b_start, b_stop):
        ps = b * BLOCK_P + tl.arange(0, BLOCK_P)
        g = tl.load(g_ptr + rows[:, None] * s_gn + ps[None, :].to(tl.int64) * s_gp,
                    mask=(rows < n)[:, None] & (ps < p)[None, :], other=0.0).to(ACC)
        acc += tl.dot(g, _r_block(ps, cs, seed0, seed1, GAUSSIAN, ACC), input_precision=PRECISION)
    out = out_ptr + split.to(tl.int64) * s_os + rows[:, None] * s_on + cs[None, :] * s_ok
    tl.store(out, acc, mask=(rows < n)[:, None] & (cs < k)[None, :])


def _fmix32_py(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _seed_words(seed: int) -> tuple[int, int]:
    """Two 32-bit words (s0, s1) mixed from a 64-bit seed."""
    seed &= (1 << 64) - 1
    s0 = _fmix32_py((seed & _M32) ^ 0x243F6A88)
    s1 = _fmix32_py(((seed >> 32) & _M32) ^ s0 ^ 0x85A308D3)
    return s0, s1


def _as_int32(x: int) -> int:
    """The int32 with the same bits as the uint32 x (keeps kernel arguments typed i32)."""
    return x - (1 << 32) if x >= 1 << 31 else x


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """(h·c) mod 2³² for int64 tensors holding uint32 values, without int64 overflow."""
    lo, hi = h & 0xFFFF, h >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def _fmix32_torch(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def projection_rows(start: int, stop: int, k: int, seed: int, dist: str = "rademacher",
                    dtype: torch.dtype = torch.float32, device=None, scaled: bool = True) -> torch.Tensor:
    """Rows [start, stop) of the projection matrix R, shape (stop − start, k).

    Exactly the entries :func:`project` uses (scaled by 1/√k unless ``scaled=False``); computed
    in ``dtype`` (float32 or float64).
    """
    _check_args(k, seed, dist)
    s0, s1 = _seed_words(seed)
    i = torch.arange(start, stop, dtype=torch.int64, device=device)[:, None]
    j = torch.arange(k, dtype=torch.int64, device=device)[None, :]
    h = _fmix32_torch(_fmix32_torch(i ^ s0) ^ ((_mul32(j, _GOLDEN) + s1) & _M32))
    if dist == "gaussian":
        u1 = ((h >> 8) + 1).to(dtype) * (1.0 / 16777216.0)
        u2 = (_fmix32_torch(h ^ _SALT) >> 8).to(dtype) * (1.0 / 16777216.0)
        r = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(6.283185307179586 * u2)
    else:
        r = torch.where((h >> 31) == 1, -1.0, 1.0).to(dtype)
    return r * (k ** -0.5) if scaled else r


def _check_args(k, seed, dist) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if dist not in DISTS:
        raise ValueError(f"dist must be one of {DISTS}, got {dist!r}")


def _check(grads, k, seed, dist) -> None:
    check_float("grads", grads, (2,))
    if grads.shape[1] >= 1 << 31:
        raise ValueError(f"grads must have fewer than 2**31 columns (row index of R is 32-bit), got {grads.shape[1]}")
    _check_args(k, seed, dist)


def project_torch(grads: torch.Tensor, k: int, seed: int, dist: str = "rademacher",
                  chunk_rows: int | None = None) -> torch.Tensor:
    """Pure-torch twin of :func:`project`: generates R ``chunk_rows`` rows at a time.

    ``chunk_rows`` defaults to about 4M entries of R per chunk; any value gives the same
    entries of R (results differ only by float summation order).
    """
    _check(grads, k, seed, dist)
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    n, p = grads.shape
    acc = acc_dtype(grads)
    chunk = chunk_rows or max(1, (1 << 22) // k)
    out = torch.zeros((n, k), dtype=acc, device=grads.device)
    for start in range(0, p, chunk):
        stop = min(p, start + chunk)
        r = projection_rows(start, stop, k, seed, dist, acc, grads.device, scaled=False)
        out += grads[:, start:stop].to(acc) @ r
    return (out * (k ** -0.5)).to(grads.dtype)


def _project_triton(grads, k, seed, dist, input_precision):
    n, p = grads.shape
    acc = acc_dtype(grads)
    if acc == torch.float64:
        input_precision = "ieee"
    # Spill-free on sm_90 with 8 warps (ptxas resource usage, Triton 3.6 and 3.9).
    BLOCK_N = next_pow2(n, 16, 32)
    BLOCK_K = next_pow2(k, 16, 64)
    BLOCK_P = 32
    grid_nk = triton.cdiv(n, BLOCK_N) * triton.cdiv(k, BLOCK_K)
    p_blocks = triton.cdiv(p, BLOCK_P)
    splits = max(1, min(p_blocks, 4 * num_sms(grads.device) // grid_nk))  # split p to fill the GPU
    per_split = triton.cdiv(p_blocks, splits)
    splits = triton.cdiv(p_blocks, per_split)
    partial = torch.empty((splits, n, k), dtype=acc, device=grads.device)
    s0, s1 = _seed_words(seed)
    grid = (triton.cdiv(n, BLOCK_N), triton.cdiv(k, BLOCK_K), splits)
    _project_kernel[grid](
        grads, partial, n, p, k, *grads.stride(), *partial.stride(), _as_int32(s0), _as_int32(s1), per_split,
        BLOCK_N=BLOCK_N, BLOCK_P=BLOCK_P, BLOCK_K=BLOCK_K, GAUSSIAN=dist == "gaussian",
        ACC=tl_dtype(acc), PRECISION=input_precision, num_warps=8)
    if splits == 1:
        out = partial[0]
    else:  # fixed-order sum over splits: the same result on every run
        out = torch.zeros((n, k), dtype=acc, device=grads.device)
        sum_partials(partial, out)
    return (out * (k ** -0.5)).to(grads.dtype)


def project(grads: torch.Tensor, k: int, seed: int, backend: str = "auto", dist: str = "rademacher",
            input_precision: str = "ieee") -> torch.Tensor:
    """Project rows of ``grads`` to k dims: ``grads @ R``, R (p×k) generated from ``seed``.

    Args:
        grads: (n, p) float16/bfloat16/float32/float64, e.g. per-example gradients.
        k: output dimension, >= 1.
        seed: any int (taken modulo 2⁶⁴); the same seed gives the same R everywhere.
        backend: "auto" (Triton on CUDA, else torch), "torch" or "triton".
        dist: "rademacher" (entries ±1/√k) or "gaussian" (N(0, 1/k) via Box–Muller).
        input_precision: Triton float32 only: "ieee" (default), "tf32" or "tf32x3".

    Returns:
        (n, k) tensor in grads' dtype, accumulated in float32 (float64 for float64 grads).
        Scaled by 1/√k so that E[‖project(x)‖²] = ‖x‖². The Triton path never stores R and its
        result does not depend on thread scheduling (no atomics).
    """
    _check(grads, k, seed, dist)
    check_precision(input_precision)
    if grads.shape[0] == 0 or grads.shape[1] == 0:
        return torch.zeros((grads.shape[0], k), dtype=grads.dtype, device=grads.device)
    if use_triton(backend, (grads,)):
        return _project_triton(grads, k, seed, dist, input_precision)
    return project_torch(grads, k, seed, dist)
