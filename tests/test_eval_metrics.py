"""Retrieval metrics on hand-computed similarity matrices, and chance levels."""

import numpy as np
import pytest

from musictext.metrics import chance_metrics, positive_ranks, retrieval_metrics

SIM = np.array([[0.9, 0.1, 0.3], [0.2, 0.5, 0.8], [0.4, 0.4, 0.1]])


def test_ranks_and_metrics_by_hand():
    # q0: positive best (rank 1); q1: 0.8 beats 0.5 (rank 2); q2: two negatives beat 0.1 (rank 3)
    assert positive_ranks(SIM, [0, 1, 2]).tolist() == [1, 2, 3]
    m = retrieval_metrics(SIM, np.array([0, 1, 2]))
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["R@5"] == m["R@10"] == pytest.approx(1.0)
    assert m["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_other_positive_columns():
    # positives need not be the diagonal
    m = retrieval_metrics(SIM, [2, 2, 0])
    # q0: 0.3 < 0.9 -> rank 2; q1: 0.8 top -> 1; q2: 0.4 ties 0.4 -> counted against -> 2
    assert m["R@1"] == pytest.approx(1 / 3)
    assert m["MRR"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_ties_count_against_and_multiple_positives():
    assert positive_ranks(np.array([[0.5, 0.5, 0.5]]), [0]).tolist() == [3]
    assert positive_ranks(np.array([[0.1, 0.9, 0.5]]), [{0, 2}]).tolist() == [2]
    assert positive_ranks(np.array([[0.1, 0.9, 0.5]]), [{0, 1}]).tolist() == [1]


def test_chance_values():
    c3 = chance_metrics(3)
    assert c3 == pytest.approx({"R@1": 1 / 3, "R@5": 1.0, "R@10": 1.0, "MRR": (1 + 1 / 2 + 1 / 3) / 3})
    c20 = chance_metrics(20)
    assert c20["R@1"] == pytest.approx(0.05)
    assert c20["R@5"] == pytest.approx(0.25)
    assert c20["R@10"] == pytest.approx(0.5)
    assert c20["MRR"] == pytest.approx(sum(1 / k for k in range(1, 21)) / 20)  # H_N / N
    with pytest.raises(ValueError):
        chance_metrics(0)


def test_chance_matches_random_rankings():
    rng = np.random.default_rng(0)
    n = 7
    sims = rng.random((4000, n))
    got = retrieval_metrics(sims, np.zeros(4000, dtype=int))
    for key, value in chance_metrics(n).items():
        assert got[key] == pytest.approx(value, abs=0.02)
