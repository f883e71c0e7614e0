"""Softmax-Jacobian vector product: the output-space Hessian product of softmax cross-entropy.

For logits ``s`` with ``p = softmax(s)``, the Hessian of ``CE(s, y)`` with respect to ``s`` is
``diag(p) - p pᵀ`` (independent of the label). Applied row-wise to directions ``Z``::

    out = P∘Z − P∘rowsum(P∘Z)   =   P∘(Z − rowsum(P∘Z))

This is ``H_out`` in the Gauss-Newton product ``Jᵀ·H_out·J·v`` of any network whose loss is
softmax cross-entropy (``Z = J·v`` are the logit directions), and the middle step of
``kernels.ce_head_hvp``.
"""

from __future__ import annotations

import torch

from influence_kernels._backend import acc_dtype, check_float, check_same_device, jit, next_pow2, tl, tl_dtype, triton, use_triton


@jit
def _softmax_jacobian_vp_kernel(
    p_ptr, z_ptr, out_ptr, R, C, n_p,
    s_pr, s_pc, s_zr, s_zc, s_or, s_oc,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ONE_C_BLOCK: tl.constexpr, ACC: tl.constexpr,
):
    """Rows [pid*BLOCK_R, ...) of out = P∘(Z − rowsum(P∘Z)); row r of Z uses row r % n_p of P."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < R
    p_rows = (rows % n_p)[:, None] * s_pr
    z_rows = rows[:, None] * s_zr
    if ONE_C_BLOCK:
        cols = tl.arange(0, BLOCK_C)
        mask = row_ok[:, None] & (cols < C)[None, :]
        p = tl.load(p_ptr + p_rows + cols[None, :] * s_pc, mask=mask, other=0.0).to(ACC)
        z = tl.load(z_ptr + z_rows + cols[None, :] * s_zc, mask=mask, other=0.0).to(ACC)
        s = tl.sum(p * z, axis=1)
        out = p * (z - s[:, None])
        tl.store(out_ptr + rows[:, None] * s_or + cols[None, :] * s_oc, out, mask=mask)
    else:
        s = tl.zeros((BLOCK_R,), ACC)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask = row_ok[:, None] & (cols < C)[None, :]
            p = tl.load(p_ptr + p_rows + cols[None, :] * s_pc, mask=mask, other=0.0).to(ACC)
            z = tl.load(z_ptr + z_rows + cols[None, :] * s_zc, mask=mask, other=0.0).to(ACC)
            s += tl.sum(p * z, axis=1)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask = row_ok[:, None] & (cols < C)[None, :]
            p = tl.load(p_ptr + p_rows + cols[None, :] * s_pc, mask=mask, other=0.0).to(ACC)
            z = tl.load(z_ptr + z_rows + cols[None, :] * s_zc, mask=mask, other=0.0).to(ACC)
            tl.store(out_ptr + rows[:, None] * s_or + cols[None, :] * s_oc, p * (z - s[:, None]), mask=mask)


def _check(probs, Z) -> None:
    check_float("probs", probs, (1, 2, 3, 4, 5, 6, 7, 8))
    check_float("Z", Z, (1, 2, 3, 4, 5, 6, 7, 8))
    check_same_device(probs=probs, Z=Z)
    if probs.shape != Z.shape and not (probs.dim() == 2 and Z.shape[-2:] == probs.shape):
        raise ValueError(f"probs must have Z's shape {tuple(Z.shape)} or its last two dims "
                         f"{tuple(Z.shape[-2:])} (shared across leading dims), got {tuple(probs.shape)}")


def softmax_jacobian_vp_torch(probs: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Pure-torch twin of :func:`softmax_jacobian_vp` (the CPU path and the test oracle)."""
    _check(probs, Z)
    acc = acc_dtype(probs, Z)
    p, z = probs.to(acc), Z.to(acc)
    pz = p * z
    return (pz - p * pz.sum(-1, keepdim=True)).to(torch.promote_types(probs.dtype, Z.dtype))


def _softmax_jacobian_vp_triton(probs: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    C = Z.shape[-1]
    z2 = Z.reshape(-1, C)  # a view whenever the leading dims allow it
    p2 = probs.reshape(-1, C)
    acc = acc_dtype(probs, Z)
    out = torch.empty(z2.shape, dtype=acc, device=Z.device)
    R = z2.shape[0]
    if R > 0 and C > 0:
        BLOCK_C = next_pow2(C, 16, 1024)
        BLOCK_R = max(1, 4096 // BLOCK_C)
        _softmax_jacobian_vp_kernel[(triton.cdiv(R, BLOCK_R),)](
            p2, z2, out, R, C, p2.shape[0], *p2.stride(), *z2.stride(), *out.stride(),
            BLOCK_R=BLOCK_R, BLOCK_C=BLOCK_C, ONE_C_BLOCK=C <= BLOCK_C, ACC=tl_dtype(acc))
    return out.reshape(Z.shape).to(torch.promote_types(probs.dtype, Z.dtype))


def softmax_jacobian_vp(probs: torch.Tensor, Z: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Output-space Hessian product of softmax cross-entropy: ``P∘Z − P∘rowsum(P∘Z)``.

    Args:
        probs: softmax probabilities P, shape (..., n, C) equal to Z's shape, or (n, C) shared
            by every leading index of Z (e.g. Z of shape (k, n, C) for k directions).
        Z: logit-space directions, shape (..., n, C), e.g. ``Z = J·v`` in a Gauss-Newton HVP.
        backend: "auto" (Triton on CUDA, else torch), "torch" or "triton" (see kernels docs).

    Returns:
        Tensor of Z's shape, dtype ``promote_types(probs.dtype, Z.dtype)``: each row is
        ``(diag(p) − p pᵀ)·z``, the Hessian of the cross-entropy w.r.t. the logits applied to z
        (computed in float32, or float64 when an input is float64).
    """
    _check(probs, Z)
    if use_triton(backend, (probs, Z)):
        return _softmax_jacobian_vp_triton(probs, Z)
    return softmax_jacobian_vp_torch(probs, Z)
