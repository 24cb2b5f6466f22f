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


# -- query -> track retrieval with several captions per track, ties, blocks, chance ------------

from musictext.metrics import (
    pos_neg_cosines,
    rank_queries,
    ranking_chance,
    ranking_metrics,
    retrieval_both_ways,
)

# Three tracks on the axes; five unit-norm captions (track of each in CAPTION_TRACK), chosen so
# every cosine is one of 0, 0.6, 0.8, 1.
AUDIO = np.eye(3)
CAPTIONS = np.array([[0.6, 0.8, 0], [1, 0, 0], [0, 0.6, 0.8], [0.8, 0, 0.6], [0, 0, 1]])
CAPTION_TRACK = [0, 0, 1, 2, 2]


def test_tie_with_the_true_item_ranks_it_below():
    # the true item (0) ties with item 1: pessimistic rank 2, AP 1/2
    r = rank_queries(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), [0], [0, 1, 2],
                     normalise=False)
    assert r.ranks.tolist() == [2] and r.ap.tolist() == [0.5]
    # a constant scorer puts every query last
    const = rank_queries(np.ones((4, 2)), np.ones((5, 2)), [0, 1, 2, 3], [0, 1, 2, 3, 4])
    assert const.ranks.tolist() == [5, 5, 5, 5]


def test_text_to_audio_several_captions_per_track_by_hand():
    summary, rankings = retrieval_both_ways(CAPTIONS, CAPTION_TRACK, AUDIO)
    # caption scores vs tracks: c0 .6/.8/0 -> 2; c1 1/0/0 -> 1; c2 0/.6/.8 -> 2; c3 .8/0/.6 -> 2; c4 -> 1
    assert rankings["text_to_audio"].ranks.tolist() == [2, 1, 2, 2, 1]
    m = summary["text_to_audio"]
    assert m["R@1"] == pytest.approx(2 / 5) and m["R@5"] == m["R@10"] == 1.0
    assert m["MRR"] == pytest.approx(0.7)
    assert m["mAP@10"] == pytest.approx(0.7)  # one relevant track per caption: AP = 1/rank
    assert m["median_rank"] == 2.0
    assert summary["n_tracks"] == 3 and summary["n_captions"] == 5
    assert summary["chance_text_to_audio"]["R@1"] == pytest.approx(1 / 3)


def test_audio_to_text_every_caption_relevant_by_hand():
    summary, rankings = retrieval_both_ways(CAPTIONS, CAPTION_TRACK, AUDIO)
    a2t = rankings["audio_to_text"]
    # track 0 scores captions 0.6, 1, 0, 0.8, 0 with c0, c1 relevant: c1 first (1), c0 after the
    # negative c3 -> position 3: AP = (1/1 + 2/3) / 2. Track 1: its only caption c2 (0.6) under
    # c0 (0.8) -> rank 2, AP 1/2. Track 2: c4 (1) first, c3 (0.6) under c2 (0.8): AP 5/6.
    assert a2t.ranks.tolist() == [1, 2, 1]
    assert a2t.n_relevant.tolist() == [2, 1, 2]
    assert a2t.ap == pytest.approx([5 / 6, 1 / 2, 5 / 6])
    m = summary["audio_to_text"]
    assert m["R@1"] == pytest.approx(2 / 3)
    assert m["MRR"] == pytest.approx(5 / 6)
    assert m["mAP@10"] == pytest.approx(13 / 18)
    assert m["median_rank"] == 1.0
    # chance: 5 captions, 2 (or 1) relevant: R@1 = 1 - C(3,2)/C(5,2) = 0.4 (or 0.2)
    assert summary["chance_audio_to_text"]["R@1"] == pytest.approx((0.4 + 0.2 + 0.4) / 3)
    assert a2t.top[0, :3].tolist() == [1, 3, 0]  # the best captions of track 0, best first


def test_map_at_10_counts_only_the_top_ten():
    # 12 items; relevant at pessimistic positions 2 and 11 (beyond 10): AP@10 = (1/2) / 2
    scores = np.array([[0.9, 0.8, 0.7, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.0]])
    labels = np.array([1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1])  # items 1 and 10 relevant (label 0)
    r = rank_queries(scores, np.eye(12), [0], labels, normalise=False)
    assert r.ranks.tolist() == [2]
    assert r.ap.tolist() == [pytest.approx(0.25)]
    # a tie between the second relevant item and a negative puts it below: 0.7 ties 0.7
    scores2 = np.array([[0.9, 0.7, 0.7, 0.1]])
    r2 = rank_queries(scores2, np.eye(4), [0], [0, 0, 1, 1], normalise=False)  # relevant 0 (.9), 1 (.7)
    assert r2.ranks.tolist() == [1] and r2.ap.tolist() == [pytest.approx((1 + 2 / 3) / 2)]


def _brute_force(scores: np.ndarray, rel: np.ndarray, k: int):
    """Pessimistic rank and AP@k by sorting the whole row, non-relevant first among ties."""
    ranks, aps = [], []
    for s, r in zip(scores, rel):
        order = np.lexsort((r, -s))  # by score descending, then non-relevant (False) first
        hits = r[order]
        ranks.append(int(np.argmax(hits)) + 1)
        found = np.cumsum(hits)
        pos = np.arange(1, len(s) + 1)
        aps.append(float((hits * found / pos)[:k].sum() / min(r.sum(), k)))
    return np.array(ranks), np.array(aps)


def test_blocked_equals_unblocked_and_brute_force():
    rng = np.random.default_rng(1)
    # small integer vectors: exact dot products, many ties, several relevant items per query
    q = rng.integers(-2, 3, size=(37, 4)).astype(np.float32)
    g = rng.integers(-2, 3, size=(23, 4)).astype(np.float32)
    q_lab, g_lab = rng.integers(0, 6, size=37), rng.integers(0, 6, size=23)
    g_lab[:6] = np.arange(6)  # every label has a gallery item
    whole = rank_queries(q, g, q_lab, g_lab, normalise=False, block=10_000)
    for block in (1, 3, 7, 36):
        part = rank_queries(q, g, q_lab, g_lab, normalise=False, block=block)
        assert np.array_equal(part.ranks, whole.ranks) and np.array_equal(part.ap, whole.ap), block
        assert np.array_equal(part.top, whole.top), block
    rel = q_lab[:, None] == g_lab[None, :]
    ranks, aps = _brute_force(q @ g.T, rel, 10)
    assert np.array_equal(whole.ranks, ranks)
    assert whole.ap == pytest.approx(aps)
    assert np.array_equal(whole.ranks, positive_ranks(q @ g.T, [set(np.flatnonzero(r)) for r in rel]))
    assert (ranks != 1).any() and (rel.sum(1) > 1).any()  # the case is not trivial


def test_block_shrinks_for_a_huge_gallery(monkeypatch):
    from musictext import metrics

    rng = np.random.default_rng(2)
    q, g = rng.normal(size=(20, 8)), rng.normal(size=(50, 8))
    q_lab, g_lab = rng.integers(0, 50, size=20), np.arange(50)
    want = rank_queries(q, g, q_lab, g_lab)
    monkeypatch.setattr(metrics, "MAX_BLOCK_CELLS", 120)  # two queries' rows at a time
    got = rank_queries(q, g, q_lab, g_lab)
    assert np.array_equal(got.ranks, want.ranks) and np.allclose(got.ap, want.ap)


def test_ranking_chance_analytic():
    c10 = ranking_chance(10, [1] * 7)
    h10 = sum(1 / r for r in range(1, 11))
    assert c10["R@1"] == pytest.approx(0.1) and c10["R@5"] == pytest.approx(0.5) and c10["R@10"] == 1.0
    assert c10["MRR"] == pytest.approx(h10 / 10)
    assert c10["mAP@10"] == pytest.approx(h10 / 10)  # AP = 1/rank within the top 10
    assert c10["median_rank"] == 5.5  # (N + 1) / 2
    assert ranking_chance(7, [1])["median_rank"] == 4.0
    for key in ("R@1", "R@5", "R@10", "MRR"):
        assert ranking_chance(20, [1])[key] == pytest.approx(chance_metrics(20)[key])
    assert ranking_chance(5, [2])["R@1"] == pytest.approx(0.4)  # 1 - C(4,2)/C(5,2)
    with pytest.raises(ValueError, match="relevant items"):
        ranking_chance(3, [4])


def test_ranking_chance_matches_random_scores():
    """Several relevant items: the exact expectation against a seeded Monte-Carlo."""
    rng = np.random.default_rng(0)
    n, labels = 20_000, np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])  # G = 12, R = 3
    scores = rng.random((n, len(labels)))
    got = ranking_metrics(rank_queries(scores, np.eye(len(labels)), np.zeros(n, int), labels, normalise=False))
    want = ranking_chance(len(labels), [3])
    for key in ("R@1", "R@5", "R@10", "MRR", "mAP@10"):
        assert got[key] == pytest.approx(want[key], abs=0.01), key
    assert got["median_rank"] == want["median_rank"] == 3.0


def test_rank_queries_rejects_bad_input():
    with pytest.raises(ValueError, match="query 1 .* no relevant item"):
        rank_queries(np.ones((2, 2)), np.ones((2, 2)), [0, 5], [0, 1])
    with pytest.raises(ValueError, match="row 0 has a NaN"):
        rank_queries(np.array([[np.nan, 1.0]]), np.ones((2, 2)), [0], [0, 1])
    with pytest.raises(ValueError, match="2-D but the gallery is 3-D"):
        rank_queries(np.ones((1, 2)), np.ones((2, 3)), [0], [0, 1])
    with pytest.raises(ValueError, match="track 1 has no caption"):
        retrieval_both_ways(np.ones((2, 2)), [0, 0], np.ones((2, 2)))


def test_pos_neg_cosines():
    pos, neg = pos_neg_cosines(CAPTIONS, CAPTION_TRACK, AUDIO)
    assert pos == pytest.approx([0.6, 1.0, 0.6, 0.6, 1.0])
    assert len(neg) == 5 * 3 - 5 and sorted(np.round(neg, 6)) == sorted([0.8, 0, 0, 0, 0, 0.8, 0.8, 0, 0, 0])
    sampled_pos, sampled = pos_neg_cosines(CAPTIONS, CAPTION_TRACK, AUDIO, max_pairs=6, seed=3)
    assert sampled_pos == pytest.approx(pos)  # every positive pair, also when negatives are sampled
    assert len(sampled) <= 6 and set(np.round(sampled, 6)) <= {0.0, 0.8}


def test_several_audio_vectors_per_track():
    """Clips of one track (``track#0``, ``track#1``): any clip of the caption's track is a hit,
    and a clip's query finds every caption of its track relevant."""
    audio = np.array([[1.0, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0, 1]])  # track 0 has two clips
    summary, rankings = retrieval_both_ways(CAPTIONS, CAPTION_TRACK, audio, audio_track=[0, 0, 1, 2])
    t2a = rankings["text_to_audio"]
    # c0 (.6, .8, 0) scores clips .6, .96, .8, 0: clip 1 (track 0) first -> rank 1, AP (1 + 2/3)/2
    assert t2a.ranks.tolist()[0] == 1 and t2a.ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert t2a.n_relevant.tolist() == [2, 2, 1, 1, 1]
    # chance over 4 audio items: R@1 = 2/4 for track 0's captions, 1/4 for the others
    assert summary["chance_text_to_audio"]["R@1"] == pytest.approx((0.5 * 2 + 0.25 * 3) / 5)
    assert summary["n_tracks"] == 3 and summary["n_audio"] == 4
    # clip 1 (.8, .6, 0) scores captions .96, .8, .36, .64, 0: c0 and c1 (its track) first and second
    assert rankings["audio_to_text"].ranks[1] == 1 and rankings["audio_to_text"].ap[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="track 3 has captions but no audio"):
        retrieval_both_ways(CAPTIONS, [0, 0, 1, 3, 2], audio, audio_track=[0, 0, 1, 2])
