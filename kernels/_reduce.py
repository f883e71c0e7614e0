"""Fixed-order sum of per-tile partial results: the deterministic alternative to atomics."""

from __future__ import annotations

import torch

from influence_kernels._backend import jit, tl, triton


@jit
def _sum_partials_kernel(part_ptr, out_ptr, T, M, BLOCK: tl.constexpr):
    """out[m] += part[0, m] + part[1, m] + ... + part[T-1, m], always in that order."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    acc = tl.load(out_ptr + offs, mask=mask, other=0.0)
    ptrs = part_ptr + offs
    for _ in range(T):
        acc += tl.load(ptrs, mask=mask, other=0.0)
        ptrs += M
    tl.store(out_ptr + offs, acc, mask=mask)


def sum_partials(partial: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Add ``partial.sum(0)`` into ``out`` in place, summing partials in index order.

    partial: (T, *S) contiguous; out: contiguous, same dtype, ``out.numel() == prod(S)``.
    The order of the additions never depends on scheduling, so results are bit-reproducible.
    """
    assert partial.is_contiguous() and out.is_contiguous() and partial.dtype == out.dtype
    T, M = partial.shape[0], out.numel()
    assert partial.numel() == T * M
    BLOCK = 1024
    _sum_partials_kernel[(triton.cdiv(M, BLOCK),)](partial, out, T, M, BLOCK=BLOCK)
    return out
