"""Fused Hessian-vector product of the mean softmax cross-entropy of a linear head.

Setting: features Φ (n×d) of n examples, a linear head W (C×d), logits Φ·Wᵀ, probabilities
P = softmax(Φ·Wᵀ) (n×C) and loss L(W) = mean_i CE(logits_i, y_i). For a direction V (C×d)::

    Z = Φ·Vᵀ                          (n×C, logit directions)
    A = P∘Z − P∘rowsum(P∘Z)           (softmax Jacobian step, see softmax_jacobian.py)
    H·V = (1/n)·Aᵀ·Φ + λ·V            (C×d)

H is the exact Hessian of L in W, which for a linear head equals its Gauss-Newton matrix, so it
is symmetric positive semi-definite. Bias convention: append a column of ones to Φ; V then has
d+1 columns and the last one is the bias direction. ``bias=True`` does this without copying Φ.

The Triton kernel runs one program per (tile of BLOCK_N rows, direction): it forms Z for its
rows in registers, applies the Jacobian step and adds its tile's Aᵀ·Φ_tile into the output,
with atomic adds, or (``deterministic=True``) into its own slice of a (tiles, k, C, D) buffer
that a second kernel sums in tile order. No n×C intermediate touches global memory.
"""

from __future__ import annotations

import math

import torch

from influence_kernels._backend import (acc_dtype, check_float, check_precision, check_same_device, jit, next_pow2, tl,
                              tl_dtype, triton, use_triton)
from influence_kernels._reduce import sum_partials
from influence_kernels.softmax_jacobian import softmax_jacobian_vp_torch


@jit
def _load_phi(phi_ptr, rows, ds, n, d, s_fn, s_fd, BIAS: tl.constexpr, ACC: tl.constexpr):
    """Φ[rows, ds] as ACC, zero outside Φ; with BIAS the column d is ones (the bias column)."""
    row_ok = (rows < n)[:, None]
    f = tl.load(phi_ptr + rows[:, None] * s_fn + ds[None, :] * s_fd,
                mask=row_ok & (ds < d)[None, :], other=0.0).to(ACC)
    if BIAS:
        f = tl.where(row_ok & (ds == d)[None, :], 1.0, f).to(ACC)
    return f


@jit
def _z_tile(phi_ptr, v_ptr, rows, cs, n, C, d, D, s_fn, s_fd, s_vc, s_vd,
            BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
            BIAS: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr):
    """Z[rows, cs] = Φ[rows, :]·V[cs, :]ᵀ, looping over D in BLOCK_D chunks."""
    z = tl.zeros((BLOCK_N, BLOCK_C), ACC)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        f = _load_phi(phi_ptr, rows, ds, n, d, s_fn, s_fd, BIAS, ACC)
        vt = tl.load(v_ptr + cs[None, :] * s_vc + ds[:, None] * s_vd,
                     mask=(cs < C)[None, :] & (ds < D)[:, None], other=0.0).to(ACC)
        z += tl.dot(f, vt, input_precision=PRECISION)
    return z


@jit
def _add_at_phi(a, phi_ptr, out_ptr, rows, cs, n, C, d, D, s_fn, s_fd, s_oc, s_od,
                BLOCK_D: tl.constexpr, BIAS: tl.constexpr, ACC: tl.constexpr,
                PRECISION: tl.constexpr, ATOMIC: tl.constexpr):
    """out[cs, :] += A[rows, cs]ᵀ·Φ[rows, :] (atomically, or a plain store into a private slice)."""
    at = tl.trans(a)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        f = _load_phi(phi_ptr, rows, ds, n, d, s_fn, s_fd, BIAS, ACC)
        part = tl.dot(at, f, input_precision=PRECISION)
        ptrs = out_ptr + cs[:, None] * s_oc + ds[None, :] * s_od
        mask = (cs < C)[:, None] & (ds < D)[None, :]
        if ATOMIC:
            tl.atomic_add(ptrs, part, mask=mask, sem="relaxed")
        else:
            tl.store(ptrs, part, mask=mask)


@jit
def _load_probs(p_rows, rows, cs, n, C, s_pc, ACC: tl.constexpr):
    """The [BLOCK_N, BLOCK_C] tile P[rows, cs] (zeros outside the matrix)."""
    return tl.load(p_rows + cs[None, :] * s_pc, mask=(rows < n)[:, None] & (cs < C)[None, :], other=0.0).to(ACC)


@jit
def _ce_head_hvp_kernel(
    phi_ptr, p_ptr, v_ptr, out_ptr, inv_n, n, C, d, D,
    s_fn, s_fd, s_pn, s_pc, s_vk, s_vc, s_vd, s_ot, s_ok, s_oc, s_od,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, ONE_C_BLOCK: tl.constexpr,
    BIAS: tl.constexpr, ATOMIC: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
):
    """Program (tile, j): out[tile, j] (+)= (1/n)·A_tileᵀ·Φ_tile for direction V[j]."""
    tile = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1).to(tl.int64)
    rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    v_ptr += j * s_vk
    out_ptr += tile * s_ot + j * s_ok
    p_rows = p_ptr + rows[:, None] * s_pn
    scale = tl.load(inv_n).to(ACC)  # 1/n, read from memory to keep full float64 precision
    if ONE_C_BLOCK:  # all C columns fit one block: Z stays in registers for both steps
        cs = tl.arange(0, BLOCK_C)
        z = _z_tile(phi_ptr, v_ptr, rows, cs, n, C, d, D, s_fn, s_fd, s_vc, s_vd,
                    BLOCK_N, BLOCK_C, BLOCK_D, BIAS, ACC, PRECISION)
        p = _load_probs(p_rows, rows, cs, n, C, s_pc, ACC)
        a = p * (z - tl.sum(p * z, axis=1)[:, None])
        _add_at_phi(a * scale, phi_ptr, out_ptr, rows, cs, n, C, d, D, s_fn, s_fd, s_oc, s_od,
                    BLOCK_D, BIAS, ACC, PRECISION, ATOMIC)
    else:  # two passes over C blocks: rowsum(P∘Z) first, then recompute Z block by block
        s = tl.zeros((BLOCK_N,), ACC)
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            z = _z_tile(phi_ptr, v_ptr, rows, cs, n, C, d, D, s_fn, s_fd, s_vc, s_vd,
                        BLOCK_N, BLOCK_C, BLOCK_D, BIAS, ACC, PRECISION)
            p = _load_probs(p_rows, rows, cs, n, C, s_pc, ACC)
            s += tl.sum(p * z, axis=1)
        for c0 in range(0, C, BLOCK_C):
            cs = c0 + tl.arange(0, BLOCK_C)
            z = _z_tile(phi_ptr, v_ptr, rows, cs, n, C, d, D, s_fn, s_fd, s_vc, s_vd,
                        BLOCK_N, BLOCK_C, BLOCK_D, BIAS, ACC, PRECISION)
            p = _load_probs(p_rows, rows, cs, n, C, s_pc, ACC)
            a = p * (z - s[:, None])
            _add_at_phi(a * scale, phi_ptr, out_ptr, rows, cs, n, C, d, D, s_fn, s_fd, s_oc, s_od,
                        BLOCK_D, BIAS, ACC, PRECISION, ATOMIC)


def _check(phi, probs, V, damping, bias, input_precision="ieee", deterministic=False):
    """Validate inputs; return the direction tensor viewed as (k, C, D)."""
    check_float("phi", phi, (2,))
    check_float("probs", probs, (2,))
    check_float("V", V, (2, 3))
    check_same_device(phi=phi, probs=probs, V=V)
    check_precision(input_precision)
    n, d = phi.shape
    if n < 1:
        raise ValueError("phi must have at least one row (n >= 1)")
    if probs.shape[0] != n:
        raise ValueError(f"probs must have n={n} rows like phi, got shape {tuple(probs.shape)}")
    C, D = probs.shape[1], d + int(bool(bias))
    if tuple(V.shape[-2:]) != (C, D):
        extra = " (d+1 columns: bias=True)" if bias else ""
        raise ValueError(f"V must have shape (C, D) or (k, C, D) with (C, D)=({C}, {D}){extra}, "
                         f"got {tuple(V.shape)}")
    if V.dim() == 3 and V.shape[0] < 1:
        raise ValueError("V must hold at least one direction (k >= 1)")
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not math.isfinite(damping):
        raise TypeError(f"damping must be a finite float, got {damping!r}")
    for name, flag in (("deterministic", deterministic), ("bias", bias)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    return V if V.dim() == 3 else V.unsqueeze(0)


def _out_dtype(phi, probs, V) -> torch.dtype:
    return torch.promote_types(torch.promote_types(phi.dtype, probs.dtype), V.dtype)


def ce_head_hvp_torch(phi: torch.Tensor, probs: torch.Tensor, V: torch.Tensor, damping: float = 0.0,
                      bias: bool = False) -> torch.Tensor:
    """Pure-torch twin of :func:`ce_head_hvp` (the CPU path and the test oracle).

    Materialises Z and A of shape (k, n, C); computes in float32 (float64 if an input is).
    """
    V3 = _check(phi, probs, V, damping, bias)
    acc = acc_dtype(phi, probs, V)
    f, p, v = phi.to(acc), probs.to(acc), V3.to(acc)
    n, d = f.shape
    w = v[..., :d]
    Z = f @ w.transpose(1, 2)  # (k, n, C)
    if bias:
        Z = Z + v[:, None, :, d]
    A = softmax_jacobian_vp_torch(p, Z) / n
    out = A.transpose(1, 2) @ f  # (k, C, d)
    if bias:
        out = torch.cat([out, A.sum(1).unsqueeze(-1)], dim=-1)
    if damping:
        out = out + damping * v
    return out.reshape(V.shape).to(_out_dtype(phi, probs, V))


def _ce_head_hvp_triton(phi, probs, V3, damping, bias, deterministic, input_precision):
    acc = acc_dtype(phi, probs, V3)
    n, d = phi.shape
    k, C, D = V3.shape
    if acc == torch.float64:
        input_precision = "ieee"  # tf32 only applies to float32 operands
        # float64 tl.dot cannot take operands widened from 16/32-bit loads (Triton 3.6 MMA):
        phi, probs, V3 = phi.to(acc), probs.to(acc), V3.to(acc)  # no-ops when already float64
    # Spill-free on sm_90 with 8 warps (ptxas resource usage, Triton 3.6 and 3.9).
    BLOCK_N = 32 if acc == torch.float64 else 64
    BLOCK_C = next_pow2(C, 16, 64)
    BLOCK_D = next_pow2(D, 16, 32)
    tiles = triton.cdiv(n, BLOCK_N)
    # λ·V is the starting value of the output: exact in float64, and no separate zero-fill.
    out = (V3.to(acc) * damping) if damping else torch.zeros(V3.shape, dtype=acc, device=V3.device)
    out = out.contiguous()
    if deterministic:
        target = torch.empty((tiles, k, C, D), dtype=acc, device=V3.device)
        s_ot = target.stride(0)
    else:
        target, s_ot = out, 0
    inv_n = torch.full((1,), 1.0 / n, dtype=acc, device=V3.device)
    _ce_head_hvp_kernel[(tiles, k)](
        phi, probs, V3, target, inv_n, n, C, d, D,
        *phi.stride(), *probs.stride(), *V3.stride(), s_ot, *target.stride()[-3:],
        BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C, BLOCK_D=BLOCK_D, ONE_C_BLOCK=C <= BLOCK_C, BIAS=bias,
        ATOMIC=not deterministic, ACC=tl_dtype(acc), PRECISION=input_precision, num_warps=8)
    if deterministic:
        sum_partials(target, out)
    return out


def ce_head_hvp(phi: torch.Tensor, probs: torch.Tensor, V: torch.Tensor, damping: float = 0.0,
                backend: str = "auto", deterministic: bool = False, input_precision: str = "ieee",
                bias: bool = False) -> torch.Tensor:
    """Hessian-vector product ``H·V = (1/n)·Aᵀ·Φ + λ·V`` of the mean CE of a linear softmax head.

    H is the exact Hessian (= Gauss-Newton matrix) in W of ``mean_i CE(Φ_i·Wᵀ, y_i)``, with
    ``Z = Φ·Vᵀ`` and ``A = P∘Z − P∘rowsum(P∘Z)``.

    Args:
        phi: features Φ, shape (n, d).
        probs: softmax probabilities P = softmax(Φ·Wᵀ), shape (n, C).
        V: directions, shape (C, D) or (k, C, D); D = d, or d + 1 with ``bias=True``.
        damping: λ, added as λ·V.
        backend: "auto" (Triton on CUDA, else torch), "torch" or "triton"; the environment
            variable INFLUENCE_KERNELS_BACKEND=torch|triton overrides "auto".
        deterministic: Triton only: no atomics; per-tile partials summed in a fixed order,
            so repeated calls are bit-identical (uses a (n/BLOCK_N, k, C, D) scratch buffer).
        input_precision: Triton float32 only: "ieee" (default), or "tf32"/"tf32x3" (faster,
            ~1e-3 / ~1e-6 relative error on tensor cores). float64 always uses "ieee".
        bias: treat Φ as if it had an extra column of ones (the bias column of W); the last
            column of V is the bias direction. Equivalent to passing ``cat([Φ, 1])``.

    Returns:
        H·V with V's shape and dtype ``promote_types`` of the three inputs; computed in float32
        (float64 if any input is float64).
    """
    V3 = _check(phi, probs, V, damping, bias, input_precision, deterministic)
    if use_triton(backend, (phi, probs, V)):
        out = _ce_head_hvp_triton(phi, probs, V3, float(damping), bias, deterministic, input_precision)
        return out.reshape(V.shape).to(_out_dtype(phi, probs, V))
    return ce_head_hvp_torch(phi, probs, V, damping, bias)
