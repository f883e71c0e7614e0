"""Queries as products with the index, streamed over blocks of training examples.

Given preconditioned test features Q = φ(∇m(test)) P (Tensor[n_test, dim]) and the index of
training features φ(∇ℓ(train_i)), a block of scores is `Q @ Φ_blockᵀ`:

    score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i),

positive = helpful (removing train_i raises test_j's loss by ≈ score / n_train), negative =
harmful. Memory is n_test × block; a dense n_test × n_train matrix is built only by `scores`.
`streamed_top_k` fuses the product with the running top-k (`influence_kernels.score_topk`: a
Triton kernel on CUDA that never stores a block's scores, its torch twin elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from influence.data import ExampleData
from influence.errors import InfluenceError, InvalidArgumentError
from influence.progress import phase
from influence.results import GroupScores, Ranking, TopK, merge_top
from influence_kernels import score_topk as score_topk_op

BLOCK_ROWS = 8192  # training rows scored per block: bounds query memory to n_test × BLOCK_ROWS


def check_finite(t: Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise InfluenceError(f"non-finite values (NaN or inf) in {what}")


def score_blocks(Q: Tensor, index, block: int = BLOCK_ROWS) -> Iterator[tuple[int, Tensor]]:
    """Yield `(offset, scores[n_test, b])` over blocks of training examples."""
    for lo, features in index.blocks(block):
        s = Q @ features.to(Q.dtype).T
        check_finite(s, f"the scores of training examples {lo}..{lo + s.shape[1] - 1} (they overflow "
                        f"{Q.dtype}; use a float64 model or rescale the inputs)")
        yield lo, s


def top_k(blocks: Iterator[tuple[int, Tensor]], k: int) -> TopK:
    """The k highest (helpful) and k lowest (harmful) scores per test row, merged block by block."""
    top = bottom = None
    for lo, s in blocks:
        top = merge_top(*(top or (None, None)), s, lo, k, largest=True)
        bottom = merge_top(*(bottom or (None, None)), s, lo, k, largest=False)
    return TopK(helpful=Ranking(top[1], top[0]), harmful=Ranking(bottom[1], bottom[0]))


def streamed_top_k(Q: Tensor, index, k: int, block: int = BLOCK_ROWS) -> tuple[TopK, str]:
    """`top_k(score_blocks(Q, index), k)` with each block's product fused into the running
    top-k, and which path ran: "triton:score_topk" (the kernel, on CUDA) or "torch:score_topk"."""
    running, ran = None, set()
    for lo, features in index.blocks(block):
        features = features.to(Q.device)
        backend = "triton" if score_topk_op.uses_triton(Q, features, k) else "torch"
        ran.add(backend)
        running = score_topk_op.score_topk(Q, features, k, lo, running, backend=backend)
        # a NaN or ±inf score anywhere in the block lands among the largest or smallest
        check_finite(torch.stack((running[0], running[2])), f"the scores of training examples {lo}..{lo + len(features) - 1} "
                     f"(they overflow {Q.dtype}; use a float64 model or rescale the inputs)")
    path = "+".join(f"{name}:score_topk" for name in sorted(ran)) or "none"
    top = TopK(helpful=Ranking(running[1], running[0]), harmful=Ranking(running[3], running[2]))
    return top, path


def group_codes(groups: str | Sequence, train: ExampleData | None, n: int) -> tuple[list, Tensor]:
    """Distinct group values (first-appearance order) and each example's group number.

    `groups`: a metadata column of `train`, or one hashable label per training example.
    """
    if isinstance(groups, str):
        if train is None:
            raise InvalidArgumentError(f"`groups` names the column {groups!r}, but this Attributor was loaded "
                                       "without `train`; pass train= to load() or a sequence of labels")
        labels = train.column(groups)
    elif hasattr(groups, "tolist") and not isinstance(groups, (list, tuple)):
        labels = groups.tolist()  # a tensor, array or Series: plain values, not 0-d tensors
    else:
        labels = list(groups)
    if len(labels) != n:
        raise InvalidArgumentError(f"`groups` has {len(labels)} entries but the training set has {n} examples")
    try:
        values = list(dict.fromkeys(labels))
    except TypeError:
        raise InvalidArgumentError("`groups` must hold one hashable label (a string or a number) per training "
                                   f"example; got {type(labels[0]).__name__} values") from None
    position = {v: c for c, v in enumerate(values)}
    return values, torch.tensor([position[v] for v in labels])


def group_totals(blocks: Iterator[tuple[int, Tensor]], values: list, codes: Tensor) -> GroupScores:
    """Scores summed per group, Tensor[n_test, n_groups]."""
    total = None
    for lo, s in blocks:
        if total is None:
            total = torch.zeros(s.shape[0], len(values), dtype=s.dtype, device=s.device)
        total.index_add_(1, codes[lo:lo + s.shape[1]].to(s.device), s)
    return GroupScores(values, total, torch.bincount(codes, minlength=len(values)))


def self_influence(index, quadratic: Callable[[Tensor], Tensor], dtype: torch.dtype, progress: bool,
                   block: int = 256) -> Tensor:
    """`φ(g_i)ᵀ P φ(g_i)` for every training example, Tensor[n_train], one block at a time
    (`quadratic`: Tensor[b, dim] -> Tensor[b])."""
    parts = []
    with phase("self-influence", index.n, enabled=progress,
               hint="a method with a factorised curvature (method='auto') answers in one product") as bar:
        for _, features in index.blocks(block):
            parts.append(quadratic(features.to(dtype)))
            bar.update(len(features))
    values = torch.cat(parts)
    check_finite(values, f"the self-influence scores (they overflow {values.dtype})")
    return values
