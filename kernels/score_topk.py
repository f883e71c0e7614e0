"""Scores of a block of training features fused with the running top-k: ``Q @ Fᵀ`` never stored.

``score_topk(Q, F, k, offset, running)`` scores queries Q (m×d) against training features F
(n×d, training indices offset..offset+n−1), ``s = Q @ Fᵀ``, and merges s into a running top-k:
the k largest (helpful) and the k smallest (harmful) scores per query row with their training
indices. Call it once per block of the index, passing the previous result as ``running``; the
m×n score matrix of a block exists only tile by tile, in registers.

The Triton kernel gives each (query tile, training split) program a loop over training tiles:
a ``tl.dot`` tile of scores, each score packed with its index into one sortable int64 key::

    key = ord(score) · 2³² + (2³² − 1 − index),  ord: float32 bits → int32 in float order

(for the harmful side the key of −score), then ``tl.topk`` of the tile joined with the
program's running keys. Splits' keys and the running keys are merged with one ``torch.topk``
on the keys, so the result does not depend on scheduling and equal scores rank the lower
index first. Scores are accumulated in float32 (float32/float16/bfloat16 inputs); float64
queries, k > MAX_K and differentiated inputs run the torch twin. A NaN or ±inf score lands
among the largest or the smallest kept, so checking the result's finiteness checks the block's.
"""

from __future__ import annotations

import torch

from influence_kernels._backend import interpreted  # noqa: F401  (re-exported for the tests)
from influence_kernels._backend import (check_float, check_same_device, jit, next_pow2, num_sms, tl,
                                        triton, use_triton)

MAX_K = 128  # largest k the Triton kernel keeps in registers; beyond it the twin runs
_LOW = (1 << 32) - 1

Running = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@jit
def _keys(s, idx):
    """int64 sort keys of float32 scores s with int64 indices idx (see the module docstring)."""
    b = s.to(tl.int32, bitcast=True)
    b = tl.where(b < 0, b ^ 0x7FFFFFFF, b)
    return (b.to(tl.int64) << 32) | (4294967295 - idx)


@jit
def _merge(best, keys, KP: tl.constexpr, BLOCK_M: tl.constexpr):
    """The KP largest of `best` (BLOCK_M×KP, descending) and `keys` (BLOCK_M×BLOCK_N), descending.

    Skips the sorts when no key beats its row's KP-th best (most tiles, once the top-k settles).
    """
    if tl.max((keys > tl.min(best, axis=1)[:, None]).to(tl.int32)) > 0:
        joined = tl.reshape(tl.join(best, tl.topk(keys, KP, dim=1)), (BLOCK_M, 2 * KP))
        best = tl.topk(joined, KP, dim=1)
    return best


@jit
def _score_topk_kernel(
    q_ptr, f_ptr, top_ptr, bot_ptr, m, n, d, offset, tiles_per_split,
    s_qm, s_qd, s_fn, s_fd, s_tsplit, s_tm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, KP: tl.constexpr,
):
    """top/bot[split, rows, :KP] = the KP largest keys of ±(Q[rows] @ F[split's range]ᵀ)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    split = tl.program_id(1)
    empty = tl.full((BLOCK_M, KP), -9223372036854775807 - 1, tl.int64)  # below every real key
    top = empty
    bot = empty
    t_stop = tl.minimum((split + 1) * tiles_per_split, tl.cdiv(n, BLOCK_N))
    for t in range(split * tiles_per_split, t_stop):
        cols = (t * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for d0 in range(0, d, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            q = tl.load(q_ptr + rows[:, None] * s_qm + ds[None, :] * s_qd,
                        mask=(rows < m)[:, None] & (ds < d)[None, :], other=0.0).to(tl.float32)
            f = tl.load(f_ptr + ds[:, None] * s_fd + cols[None, :] * s_fn,
                        mask=(ds < d)[:, None] & (cols < n)[None, :], other=0.0).to(tl.float32)
            acc += tl.dot(q, f, input_precision="ieee")
        valid = (cols < n)[None, :]
        idx = (cols + offset)[None, :]
        top = _merge(top, tl.where(valid, _keys(acc, idx), -9223372036854775807 - 1), KP, BLOCK_M)
        bot = _merge(bot, tl.where(valid, _keys(-acc, idx), -9223372036854775807 - 1), KP, BLOCK_M)
    out = split.to(tl.int64) * s_tsplit + rows[:, None] * s_tm + tl.arange(0, KP)[None, :]
    mask = (rows < m)[:, None]
    tl.store(top_ptr + out, top, mask=mask)
    tl.store(bot_ptr + out, bot, mask=mask)


def encode(scores: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The kernel's int64 keys of float32-rounded scores and int64 indices (same shapes)."""
    b = scores.float().contiguous().view(torch.int32)
    b = torch.where(b < 0, b ^ 0x7FFFFFFF, b)
    return (b.to(torch.int64) << 32) | (_LOW - idx)


def decode(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`encode`: (float32 scores, int64 indices)."""
    b = (keys >> 32).to(torch.int32)
    b = torch.where(b < 0, b ^ 0x7FFFFFFF, b)
    return b.view(torch.float32), _LOW - (keys & _LOW)


def _merge_keys(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    return torch.topk(torch.cat(parts, dim=1), width, dim=1, sorted=True).values


def _score_topk_triton(queries, features, k, offset, running):
    m, d = queries.shape
    n = features.shape[0]
    KP = next_pow2(k, 16, MAX_K)
    BLOCK_M, BLOCK_N, BLOCK_D = 16, max(64, KP), next_pow2(d, 16, 64)
    m_tiles, n_tiles = triton.cdiv(m, BLOCK_M), triton.cdiv(n, BLOCK_N)
    splits = max(1, min(n_tiles, 4 * num_sms(queries.device) // m_tiles))  # fill the GPU
    per_split = triton.cdiv(n_tiles, splits)
    splits = triton.cdiv(n_tiles, per_split)
    top = torch.empty((splits, m, KP), dtype=torch.int64, device=queries.device)
    bot = torch.empty_like(top)
    _score_topk_kernel[(m_tiles, splits)](
        queries, features, top, bot, m, n, d, offset, per_split, *queries.stride(),
        *features.stride(), top.stride(0), top.stride(1),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D, KP=KP, num_warps=4)
    width = min(k, n + (0 if running is None else running[0].shape[1]))
    tops, bots = [top.permute(1, 0, 2).reshape(m, -1)], [bot.permute(1, 0, 2).reshape(m, -1)]
    if running is not None:
        tops.append(encode(running[0], running[1]))
        bots.append(encode(-running[2].float(), running[3]))
    top_s, top_i = decode(_merge_keys(tops, width))
    bot_s, bot_i = decode(_merge_keys(bots, width))
    return top_s.to(queries.dtype), top_i, (-bot_s).to(queries.dtype), bot_i


def _merge_torch(best: tuple | None, scores, offset: int, k: int, largest: bool):
    idx = torch.arange(offset, offset + scores.shape[1], device=scores.device).expand_as(scores)
    if best is not None:
        scores, idx = torch.cat([best[0], scores], dim=1), torch.cat([best[1], idx], dim=1)
    values, pos = torch.topk(scores, min(k, scores.shape[1]), dim=1, largest=largest, sorted=True)
    return values, torch.gather(idx, 1, pos)


def score_topk_torch(queries: torch.Tensor, features: torch.Tensor, k: int, offset: int = 0,
                     running: Running | None = None) -> Running:
    """Pure-torch twin of :func:`score_topk`: the whole block ``Q @ Fᵀ`` (in Q's dtype), then
    ``torch.topk`` of it joined with the running top-k (equal scores: any of them may rank
    first)."""
    _check(queries, features, k, offset, running)
    return _score_topk_twin(queries, features, k, offset, running)


def _score_topk_twin(queries, features, k, offset, running):
    s = queries @ features.to(queries.dtype).T
    top = _merge_torch(None if running is None else running[:2], s, offset, k, largest=True)
    bottom = _merge_torch(None if running is None else running[2:], s, offset, k, largest=False)
    return (*top, *bottom)


def _check(queries, features, k, offset, running) -> None:
    check_float("queries", queries, (2,))
    check_float("features", features, (2,))
    check_same_device(queries=queries, features=features)
    if queries.shape[1] != features.shape[1]:
        raise ValueError(f"queries (m×d) and features (n×d) must have the same d, got "
                         f"{tuple(queries.shape)} and {tuple(features.shape)}")
    for name, v, lo in (("k", k, 1), ("offset", offset, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if offset + features.shape[0] > _LOW:
        raise ValueError("training indices must stay below 2**32 - 1, got offset + n = "
                         f"{offset + features.shape[0]}")
    if running is not None and (len(running) != 4
                                or any(r.shape[0] != queries.shape[0] for r in running)):
        raise ValueError("running must be the 4 tensors a previous call returned for the same "
                         "queries")


def _kernel_fits(queries: torch.Tensor, k: int) -> bool:
    return queries.dtype != torch.float64 and k <= MAX_K


def uses_triton(queries: torch.Tensor, features: torch.Tensor, k: int,
                backend: str = "auto") -> bool:
    """Whether :func:`score_topk` with these arguments runs the Triton kernel (else the twin)."""
    return bool(features.shape[0] and queries.shape[0] and _kernel_fits(queries, k)
                and use_triton(backend, (queries, features)))


def score_topk(queries: torch.Tensor, features: torch.Tensor, k: int, offset: int = 0,
               running: Running | None = None, backend: str = "auto") -> Running:
    """Score a block of training features and merge it into the running top-k.

    Args:
        queries: (m, d) preconditioned test features Q; scores are ``s[j, i] = Q[j] · F[i]``
            (influence: positive = helpful, negative = harmful).
        features: (n, d) training features of indices offset..offset+n−1.
        k: how many to keep per row (>= 1); running: the previous call's result, or None.
        backend: "auto" (Triton on CUDA unless float64 or k > MAX_K, else torch), "torch" or
            "triton" (raises for float64 queries or k > MAX_K).

    Returns:
        (helpful scores, helpful indices, harmful scores, harmful indices), each (m, w) with
        w = min(k, training examples seen so far): the largest scores in descending order and
        the smallest in ascending order, scores in Q's dtype, indices int64.
    """
    _check(queries, features, k, offset, running)
    if backend == "triton" and not _kernel_fits(queries, k):
        raise ValueError("backend='triton' needs float32/float16/bfloat16 queries and k <= "
                         f"{MAX_K}, got {queries.dtype} and k={k}; use backend='auto' or 'torch'")
    if backend not in ("auto", "torch", "triton"):
        use_triton(backend, ())  # raises the backend error
    if backend != "torch" and uses_triton(queries, features, k, backend):
        return _score_topk_triton(queries, features, k, offset, running)
    return _score_topk_twin(queries, features, k, offset, running)
