"""Retrieval ranks computed in blocks of queries equal those of the full similarity matrix, ties
included, and the memory they take follows the block, not queries x gallery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from musictext.metrics import (
    _rank_block,
    blocked_positive_ranks,
    blocked_retrieval_metrics,
    cosine_matrix,
    positive_ranks,
    rank_queries,
    retrieval_metrics,
)


def old_rank_block(scores: np.ndarray, rel: np.ndarray, k: int):
    """metrics._rank_block as it was (commit 51efec7), dense masks throughout: the reference."""
    kk = min(k, scores.shape[1])
    pos = np.where(rel, scores, -np.inf)
    neg = np.where(rel, -np.inf, scores)
    best = pos.max(axis=1)
    ranks = 1 + (neg >= best[:, None]).sum(axis=1)
    top_pos = -np.sort(np.partition(-pos, kk - 1, axis=1)[:, :kk], axis=1)
    top_neg = -np.sort(np.partition(-neg, kk - 1, axis=1)[:, :kk], axis=1)
    neg_at_or_above = (top_neg[:, None, :] >= top_pos[:, :, None]).sum(axis=2)
    j = np.arange(kk)
    position = 1 + j[None, :] + neg_at_or_above
    n_rel = rel.sum(axis=1)
    hit = (j[None, :] < n_rel[:, None]) & (position <= k)
    precision = np.where(hit, (j[None, :] + 1) / position, 0.0)
    ap = precision.sum(axis=1) / np.minimum(n_rel, k)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return ranks.astype(np.int64), ap, np.take_along_axis(part, order, axis=1).astype(np.int64)


def test_rank_block_equals_its_dense_form():
    rng = np.random.default_rng(11)
    for trial in range(400):
        b, g, k = int(rng.integers(1, 40)), int(rng.integers(1, 80)), int(rng.integers(1, 15))
        if trial % 2:  # quantised: many ties, between relevant and non-relevant items too
            scores = (rng.integers(-3, 4, (b, g)) / 4).astype(np.float32)
        else:
            scores = rng.standard_normal((b, g)).astype(np.float32)
        rel = rng.random((b, g)) < rng.random() * 0.5
        rel[np.arange(b), rng.integers(0, g, b)] = True
        for got, want in zip(_rank_block(scores, rel, k), old_rank_block(scores, rel, k)):
            np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


def dyadic(rng: np.random.Generator, n: int, dim: int = 16, nonzero: int = 4) -> np.ndarray:
    """Vectors of ``nonzero`` entries of +-1 (norm 2): every cosine is a multiple of 1/4, computed
    exactly in any order, so ties are real ties in the full matrix and in every block."""
    x = np.zeros((n, dim), dtype=np.float32)
    for row in x:
        row[rng.choice(dim, nonzero, replace=False)] = rng.choice([-1.0, 1.0], nonzero)
    return x


@pytest.fixture(scope="module")
def tied():
    rng = np.random.default_rng(3)
    gallery = dyadic(rng, 300)
    gallery[150:] = gallery[:150]  # duplicates: exact ties with the true item
    truth = rng.integers(0, len(gallery), 500)
    queries = np.where(rng.random((500, 1)) < 0.5, gallery[truth], dyadic(rng, 500))
    return queries, gallery, truth


def test_ties_are_real_in_the_fixture(tied):
    queries, gallery, truth = tied
    sim = cosine_matrix(queries, gallery)
    best = sim[np.arange(len(truth)), truth]
    assert ((sim == best[:, None]).sum(axis=1) > 1).mean() > 0.9  # nearly every query has a tie


@pytest.mark.parametrize("block", [1, 7, 64, 1024])
def test_blocked_ranks_equal_the_full_matrix_with_ties(tied, block):
    queries, gallery, truth = tied
    full = positive_ranks(cosine_matrix(queries, gallery), truth)
    np.testing.assert_array_equal(blocked_positive_ranks(queries, gallery, truth, block=block), full)
    assert blocked_retrieval_metrics(queries, gallery, truth, block=block) == retrieval_metrics(
        cosine_matrix(queries, gallery), truth)


def test_blocked_ranks_with_sets_of_positives(tied):
    queries, gallery, truth = tied
    sets = [{int(t), int(t + 150) % 300, 5} for t in truth]
    full = positive_ranks(cosine_matrix(queries, gallery), sets)
    np.testing.assert_array_equal(blocked_positive_ranks(queries, gallery, sets, block=33), full)


def test_rank_queries_equals_the_full_matrix_with_ties(tied):
    """The evaluation's ranking (labels: every gallery item of the query's track is relevant)."""
    queries, gallery, truth = tied
    gallery_labels = np.arange(len(gallery)) % 150  # an item and its duplicate share a track
    query_labels = gallery_labels[truth]
    sets = [set(np.flatnonzero(gallery_labels == label)) for label in query_labels]
    full = positive_ranks(cosine_matrix(queries, gallery), sets)
    for block in (1, 13, 1024):
        ranking = rank_queries(queries, gallery, query_labels, gallery_labels, k=10, block=block)
        np.testing.assert_array_equal(ranking.ranks, full)
    # Top-k ids: best first, equal scores by lower gallery index, as a sort of the full matrix gives
    # wherever the k-th and (k+1)-th scores differ.
    sim = cosine_matrix(queries, gallery)
    order = np.lexsort((np.broadcast_to(np.arange(len(gallery)), sim.shape), -sim), axis=1)[:, :10]
    clean = sim[np.arange(len(sim)), order[:, 9]] > np.sort(sim, axis=1)[:, -11]
    assert clean.sum() >= 10
    np.testing.assert_array_equal(ranking.top[clean], order[clean])


def test_blocked_ranks_on_continuous_vectors():
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((2000, 64)).astype(np.float32)
    gallery = (queries + rng.standard_normal((2000, 64)).astype(np.float32)).astype(np.float32)
    truth = np.arange(2000)
    full = positive_ranks(cosine_matrix(queries, gallery), truth)
    blocked = blocked_positive_ranks(queries, gallery, truth, block=100)
    # BLAS may round a block's cosines differently in the last bit: a rank moves only at a near-tie.
    assert (blocked != full).mean() < 1e-3 and np.abs(blocked - full).max() <= 1
    assert blocked_retrieval_metrics(queries, gallery, truth, block=100)["R@1"] == pytest.approx(
        retrieval_metrics(cosine_matrix(queries, gallery), truth)["R@1"], abs=1e-3)


def test_bad_input_is_refused():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="4-D but the gallery is 5-D"):
        blocked_positive_ranks(x, np.ones((3, 5)), [0, 1, 2])
    with pytest.raises(ValueError, match="2 positive sets for 3 queries"):
        blocked_positive_ranks(x, x, [{0}, {1}])
    with pytest.raises(ValueError, match="block"):
        blocked_positive_ranks(x, x, [0, 1, 2], block=0)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="queries: row 1 has a NaN"):
        blocked_positive_ranks(bad, x, [0, 1, 2])


MEMORY_WORKER = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
from musictext import metrics

which, n, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
text = rng.standard_normal((n, dim)).astype(np.float32)
audio = (text + rng.standard_normal((n, dim))).astype(np.float32)
run = {
    "both_ways": lambda: metrics.retrieval_both_ways(text, np.arange(n), audio),  # the evaluate stage's
    "blocked": lambda: metrics.blocked_retrieval_metrics(text, audio, np.arange(n)),
    "full": lambda: metrics.retrieval_metrics(metrics.cosine_matrix(text, audio), np.arange(n)),
}[which]
tracemalloc.start()  # numpy's buffers too: a count the kernel's reclaiming under memory pressure leaves alone
with open("/proc/self/clear_refs", "w") as f:  # "5": the peak RSS (ru_maxrss too) restarts now
    f.write("5")
start, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
run()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak / 1024, "growth_mib": (peak - start) / 1024, "seconds": time.perf_counter() - t0,
                  "traced_mib": tracemalloc.get_traced_memory()[1] / 2**20}))
"""


def eval_memory(which: str, n: int) -> dict:
    """Peak RSS of a fresh process ranking ``n`` x 64-D captions against ``n`` tracks with ``which``,
    and its growth over the RSS before the ranking (the vectors: 2 x 1.2 MiB per 5k)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "python"),
                                                                    os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", MEMORY_WORKER, which, str(n), "64"], env=env,
                          capture_output=True, text=True, check=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{n:,} x 64-D, {which}: peak RSS {r['peak_mib']:.0f} MiB (+{r['growth_mib']:.0f}), traced peak "
          f"{r['traced_mib']:.0f} MiB, in {r['seconds']:.1f} s")
    return r


def test_ranking_5k_takes_block_memory_not_the_matrix():
    # Asserted on the traced allocations; RSS growth is printed only: under memory pressure the
    # kernel reclaims library pages that the phase then faults back in, which reads as growth.
    # The full matrix: 5k x 5k float32 cosines and positive_ranks' float64 copy (286 MiB).
    assert eval_memory("full", 5000)["traced_mib"] > 250
    assert eval_memory("blocked", 5000)["traced_mib"] < 120  # 1,024 x 5k cells, the same two copies: 59 MiB
    assert eval_memory("both_ways", 5000)["traced_mib"] < 250


@pytest.mark.slow
@pytest.mark.parametrize("which", ["blocked", "both_ways"])
def test_ranking_50k_stays_under_1_gb(which):
    # The full matrix would be 9.3 GiB of float32 alone. The peak RSS is an upper bound here:
    # reclaimed pages only lower it.
    result = eval_memory(which, 50_000)
    assert result["peak_mib"] <= 1024 and result["traced_mib"] <= 1024
