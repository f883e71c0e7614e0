"""Result objects returned by `Attributor.top_k` and `Attributor.group_scores`.

Scores follow the package convention: `score[j, i] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ(train_i)`;
positive = helpful (removing train_i raises the test loss), negative = harmful.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Ranking:
    """For each test row, k training examples and their scores.

    Attributes:
        indices: LongTensor[n_test, k] of training-set indices.
        scores: Tensor[n_test, k], ordered most extreme first.
    """

    indices: Tensor
    scores: Tensor


@dataclass
class TopK:
    """`helpful`: highest scores first (proponents); `harmful`: lowest first (opponents)."""

    helpful: Ranking
    harmful: Ranking

    def _repr_html_(self) -> str:
        from influence.render import topk_html

        return topk_html(self)

    def to_pandas(self):
        """Long table: test, kind ("helpful"/"harmful"), rank, train_index, score."""
        import pandas as pd

        rows = []
        for kind, ranking in (("helpful", self.helpful), ("harmful", self.harmful)):
            for j in range(ranking.indices.shape[0]):
                for r in range(ranking.indices.shape[1]):
                    rows.append((j, kind, r, int(ranking.indices[j, r]), float(ranking.scores[j, r])))
        return pd.DataFrame(rows, columns=["test", "kind", "rank", "train_index", "score"])


@dataclass
class GroupScores:
    """Per-group totals of scores.

    Attributes:
        groups: the distinct group values, in first-appearance order (length g).
        sum: Tensor[n_test, g], sum of scores over the group's training examples.
        count: LongTensor[g], number of training examples in each group.
        mean: Tensor[n_test, g], `sum / count`.
    """

    groups: list
    sum: Tensor
    count: Tensor

    def _repr_html_(self) -> str:
        from influence.render import group_scores_html

        return group_scores_html(self)

    @property
    def mean(self) -> Tensor:
        return self.sum / self.count.to(self.sum.dtype)

    def to_pandas(self):
        """Long table: test, group, sum, mean, count."""
        import pandas as pd

        mean = self.mean
        rows = [(j, g, float(self.sum[j, c]), float(mean[j, c]), int(self.count[c]))
                for j in range(self.sum.shape[0]) for c, g in enumerate(self.groups)]
        return pd.DataFrame(rows, columns=["test", "group", "sum", "mean", "count"])


def merge_top(best_scores: Tensor | None, best_idx: Tensor | None, scores: Tensor, offset: int, k: int,
              largest: bool) -> tuple[Tensor, Tensor]:
    """Merge a block of scores [m, b] (train indices offset..offset+b) into a running top-k."""
    idx = torch.arange(offset, offset + scores.shape[1], device=scores.device).expand_as(scores)
    if best_scores is not None:
        scores, idx = torch.cat([best_scores, scores], dim=1), torch.cat([best_idx, idx], dim=1)
    top, pos = torch.topk(scores, min(k, scores.shape[1]), dim=1, largest=largest, sorted=True)
    return top, torch.gather(idx, 1, pos)
