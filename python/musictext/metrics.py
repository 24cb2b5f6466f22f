"""Retrieval metrics (R@K, MRR) and their chance levels."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

KS = (1, 5, 10)


def _positive_sets(positives, n_queries: int) -> list[set[int]]:
    if isinstance(positives, np.ndarray) and positives.ndim == 1:
        return [{int(p)} for p in positives]
    sets = [{int(p)} if np.isscalar(p) else {int(x) for x in p} for p in positives]
    if len(sets) != n_queries:
        raise ValueError(f"{len(sets)} positive sets for {n_queries} queries")
    return sets


def positive_ranks(sim: np.ndarray, positives: Sequence[int] | Iterable[Iterable[int]]) -> np.ndarray:
    """1-based rank of each query's best positive among the gallery.

    Ties are counted against the query (a negative scoring equal to the best positive ranks
    above it), so a constant similarity matrix scores worst, never best.
    """
    sim = np.asarray(sim, dtype=np.float64)
    sets = _positive_sets(positives, sim.shape[0])
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    for q, pos in enumerate(sets):
        if not pos:
            raise ValueError(f"query {q} has no positive")
        idx = np.fromiter(pos, dtype=np.int64)
        best = sim[q, idx].max()
        neg = np.ones(sim.shape[1], dtype=bool)
        neg[idx] = False
        ranks[q] = 1 + int((sim[q, neg] >= best).sum())
    return ranks


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    ranks = np.asarray(ranks)
    out = {f"R@{k}": float((ranks <= k).mean()) for k in KS}
    out["MRR"] = float((1.0 / ranks).mean())
    return out


def retrieval_metrics(sim: np.ndarray, positives) -> dict[str, float]:
    """``sim`` [Q, G]; ``positives``: gallery index per query, or a set of indices per query."""
    return metrics_from_ranks(positive_ranks(sim, positives))


def chance_metrics(n_gallery: int) -> dict[str, float]:
    """Expected metrics of a random ranking with one positive among ``n_gallery`` items."""
    if n_gallery < 1:
        raise ValueError("empty gallery")
    out = {f"R@{k}": min(k, n_gallery) / n_gallery for k in KS}
    out["MRR"] = float(sum(1.0 / r for r in range(1, n_gallery + 1)) / n_gallery)  # H_N / N
    return out


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T
