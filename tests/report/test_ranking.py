"""influence.report.ranking against direct numpy computations."""

import numpy as np
import torch

from influence.harm import harmed_counts
from influence.report import ranking
from influence.scoring import top_k


def test_shares_of_the_harmful_groups_add_up_to_one():
    harm = np.array([3.0, -1.0, 1.0, 0.0])
    share = ranking.shares(harm)
    np.testing.assert_allclose(share, [0.75, -0.25, 0.25, 0.0])
    assert np.isclose(share[harm > 0].sum(), 1.0) and np.all(np.sign(share) == np.sign(harm))
    assert ranking.shares(np.array([-1.0, -2.0])).tolist() == [0.0, 0.0]  # no harmful group: no shares


def test_planted_harmful_group_is_significant_and_random_group_is_not():
    rng = np.random.default_rng(1)
    harm = rng.normal(size=2000)
    planted = np.arange(100)
    harm[planted] += 1.0  # a harmful group
    random_group = rng.choice(np.arange(100, 2000), size=100, replace=False)
    observed = np.array([harm[planted].sum(), harm[random_group].sum()])
    p = ranking.permutation_p_values(harm, np.array([100, 100]), observed, 999, np.random.default_rng(2))
    assert p[0] <= 0.002
    assert p[1] > 0.01


def test_permutation_null_matches_exhaustive_enumeration():
    # 6 examples, groups of size 2: the exact p-value is the fraction of the 15 pairs with sum >= observed
    harm = np.array([3.0, 1.0, 0.5, -1.0, -2.0, 0.2])
    pairs = [harm[i] + harm[j] for i in range(6) for j in range(i + 1, 6)]
    observed = 3.5
    exact = np.mean(np.array(pairs) >= observed)
    p = ranking.permutation_p_values(harm, np.array([2]), np.array([observed]), 20000, np.random.default_rng(3))
    assert abs(p[0] - exact) < 0.01


def test_the_reports_top_k_matches_argsort_and_counts_only_harmful_scores():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(5, 30))
    scores[4] = np.abs(scores[4]) + 0.1  # a regression nobody harms: its lowest scores are > 0
    top = top_k([(0, torch.as_tensor(scores))], 4)  # the one top-k, streamed or dense
    idx, vals = top.harmful.indices.numpy(), top.harmful.scores.numpy()
    np.testing.assert_array_equal(idx, np.argsort(scores, axis=1)[:, :4])
    np.testing.assert_allclose(vals, np.sort(scores, axis=1)[:, :4])
    np.testing.assert_array_equal(top.helpful.indices.numpy(), np.argsort(-scores, axis=1)[:, :4])
    counts = harmed_counts(top.harmful, 30)
    expected = np.zeros(30, dtype=np.int64)
    for j in range(5):
        for i in np.argsort(scores[j])[:4]:
            expected[i] += scores[j, i] < 0
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == (vals < 0).sum() <= 16


def test_group_stats_bootstrap_ranks_the_dominant_group_first():
    rng = np.random.default_rng(5)
    per_regression = rng.normal(0, 0.1, size=(50, 3))
    per_regression[:, 1] += 1.0
    stats = ranking.group_stats("source", ["a", "b", "c"], np.array([10, 10, 10]), per_regression, per_regression,
                                rng.normal(size=30), "first_order", 99, 200, rng)
    assert stats.top_rate[1] == 1.0
    assert stats.share_low[1] > 0.8 and stats.share_high[1] <= 1.0 + 1e-9
