"""Per-token answers: which tokens of a training document carry its influence on a query.

A document's training loss is the sum of its token losses, ℓ(train_i) = Σ_t ℓ_t, so its
score splits exactly over the tokens it predicts:

    score[j, i] = Σ_t token_score[j, i, t],
    token_score[j, i, t] = ∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ_t(train_i)

(the same preconditioner and features as `Attributor.scores`; positive = that token's
prediction helped the query's completion). Computed on demand for the documents asked
about — one gradient per scored token, no pass over the rest of the training set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from influence.batching import take
from influence.data import IGNORE_INDEX
from influence.errors import InvalidArgumentError, NotFittedError


def token_scores(attr, test, rows: Sequence[int]) -> Tensor:
    """Scores of the training documents `rows` on every test example, per training token.

    Args:
        attr: a fitted `Attributor` whose task scores tokens (`LanguageModelingTask`: targets
            are token ids per position, `IGNORE_INDEX` where not scored).
        test: the test examples (any accepted data form), e.g. prompts with their completion
            scored (`token_labels(..., prompt_length=...)`).
        rows: indices of training documents.
    Returns:
        Tensor[n_test, len(rows), L]: entry [j, r, t] is `∇m(test_j)ᵀ (H + λI)⁻¹ ∇ℓ_t` for the
        token at position t of document rows[r] (0 where it is not scored); summed over t
        it is `attr.scores(test)[j, rows[r]]`. Positive = helpful.
    """
    if getattr(attr, "index", None) is None:
        raise NotFittedError("call Attributor.fit() before asking for token_scores")
    rows = [int(r) for r in rows]
    if not rows or min(rows) < 0 or max(rows) >= len(attr.train):
        raise InvalidArgumentError("`rows` must be indices of training documents in "
                                   f"[0, {len(attr.train) - 1}], got {rows[:5]}")
    Q, _ = attr.method.precondition(attr.test_gradients(test))
    out = []
    for row in rows:
        inputs, targets = attr.train.batch([row])
        if targets.ndim != 2:
            raise InvalidArgumentError(
                "token_scores needs per-token targets (shape [documents, length]), as "
                f"LanguageModelingTask's; the training targets have shape {tuple(targets.shape)}")
        positions = _scored_positions(attr.task, targets[0])
        per_token = targets.new_full((len(positions), targets.shape[1]), IGNORE_INDEX)
        per_token[torch.arange(len(positions)), positions] = targets[0, positions]
        copies = take(inputs, torch.zeros(len(positions), dtype=torch.long))
        F = attr.gradients.batch(copies, per_token, attr.task.loss, "train")
        scores = Q.new_zeros(Q.shape[0], targets.shape[1])
        scores[:, positions] = (Q.to(F.dtype) @ F.T).to(Q.dtype)
        out.append(scores)
    return torch.stack(out, dim=1).to(attr.fm.dtype)


def _scored_positions(task, labels: Tensor) -> Tensor:
    """Positions t whose token is scored: labels[t] ≠ IGNORE_INDEX, and t ≥ 1 when the task
    shifts (the first token is never predicted)."""
    scored = labels != IGNORE_INDEX
    if getattr(task, "shift", False):
        scored[0] = False
    return torch.nonzero(scored).flatten()
