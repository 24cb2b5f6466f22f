"""Retrieval metrics (R@K, MRR, mAP@10, median rank) and their chance levels."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
    """``sim`` [Q, G]; ``positives``: gallery index per query, or a set of indices per query.
    ``blocked_retrieval_metrics`` gives the same from the vectors without a [Q, G] matrix."""
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


# -- Query -> gallery retrieval with several relevant items, in blocks ---------------------------
#
# A query (a caption, or a track) is scored against the whole gallery; the gallery items sharing
# its label are relevant. Ties are counted pessimistically: a relevant item's position is
# 1 + (the relevant items scored above it) + (every non-relevant item scoring >= it), so a
# constant scorer ranks every query last, never first. Relevant items tied with each other do not
# push the best one down: whichever of them comes first is a hit.

RANK_BLOCK = 1024  # queries scored at once: memory is block x gallery, never queries x gallery
MAX_BLOCK_CELLS = 1 << 21  # block x gallery cells at most: ~6 float32 arrays of it live at once (~50 MiB)


@dataclass(frozen=True)
class Ranking:
    """Per query: the pessimistic 1-based rank of its best relevant item (``ranks``), its AP@k,
    how many relevant items it has, and the gallery indices of its top ``k`` (best first)."""

    ranks: np.ndarray  # [Q] int64
    ap: np.ndarray  # [Q] float64, AP@k
    n_relevant: np.ndarray  # [Q] int64
    top: np.ndarray  # [Q, min(k, G)] int64
    n_gallery: int
    k: int


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x``'s rows scaled to unit length (an all-zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


CHUNK_CELLS = 1 << 18  # values per chunk of rows (or pairs) gathered/normalised at a time: ~2 MiB of float64


def chunk_rows(dim: int) -> int:
    """Rows per chunk for ``dim``-wide vectors: memory CHUNK_CELLS values, never N x dim."""
    return max(1, CHUNK_CELLS // max(1, dim))


def _row_norms(x: np.ndarray) -> np.ndarray:
    """[N] the divisors ``unit_rows`` uses (max(|row|, 1e-12)), a chunk of rows at a time:
    np.linalg.norm over all of ``x`` would hold a squared copy of it."""
    out = np.empty(len(x), dtype=x.dtype)
    step = chunk_rows(x.shape[1])
    for lo in range(0, len(x), step):
        out[lo : lo + step] = np.linalg.norm(x[lo : lo + step], axis=1)
    return np.maximum(out, 1e-12)


def _cosine_block(queries: np.ndarray, gallery: np.ndarray, gallery_norms: np.ndarray | None) -> np.ndarray:
    """[B, G] scores of a block of queries: cosines when ``gallery_norms`` (``_row_norms``) is
    given, else dot products. The queries are normalised here and the gallery's norms divide
    the product, so no unit copy of either whole set is ever made."""
    if gallery_norms is None:
        return queries @ gallery.T
    scores = unit_rows(queries) @ gallery.T
    scores /= gallery_norms[None, :]
    return scores


def _check_vectors(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a [N, dim] array, got shape {x.shape}")
    step = chunk_rows(x.shape[1])
    for lo in range(0, len(x), step):  # a chunk at a time: the mask is N x dim bytes otherwise
        bad = ~np.isfinite(x[lo : lo + step]).all(axis=1)
        if bad.any():
            raise ValueError(f"{name}: row {lo + int(np.flatnonzero(bad)[0])} has a NaN or infinite value")
    return x.astype(np.float32 if x.dtype != np.float64 else np.float64, copy=False)


def _relevant_cells(scores: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, score) of every relevant cell, row after row, and where each row's cells start: a
    query has a few relevant items, so these are far fewer than the block's cells."""
    rows, cols = np.nonzero(rel)
    return rows, scores[rows, cols], np.searchsorted(rows, np.arange(len(rel)))


def _best_ranks(scores: np.ndarray, rows: np.ndarray, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Pessimistic 1-based rank of each query's best relevant item, from the relevant cells' rows
    and scores, row after row (at least one per row; ``starts``: where each row's begin): every
    item scoring >= it ranks above it, except the relevant ones, which can only tie it."""
    best = np.maximum.reduceat(values, starts)
    best_ties = np.add.reduceat((values == best[rows]).astype(np.int64), starts)
    return 1 + (scores >= best[:, None]).sum(axis=1) - best_ties


def _top_relevant(rows: np.ndarray, values: np.ndarray, starts: np.ndarray, kk: int) -> np.ndarray:
    """[B, kk]: each query's kk best relevant scores, descending, -inf where it has fewer."""
    order = np.lexsort((-values, rows))
    rows, values = rows[order], values[order]
    j = np.arange(len(rows)) - starts[rows]
    keep = j < kk
    out = np.full((len(starts), kk), -np.inf, dtype=values.dtype)
    out[rows[keep], j[keep]] = values[keep]
    return out


def _rank_block(scores: np.ndarray, rel: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ranks, AP@k, top-k indices) of one block of queries: ``scores``/``rel`` are [B, G], every
    query with at least one relevant item."""
    n_gallery = scores.shape[1]
    kk = min(k, n_gallery)
    rows, values, starts = _relevant_cells(scores, rel)
    ranks = _best_ranks(scores, rows, values, starts)
    top_pos = _top_relevant(rows, values, starts, kk)  # [B, kk] descending
    neg = np.where(rel, -np.inf, scores)
    # AP@k needs only the kk best relevant and the kk best non-relevant scores of each query:
    # a relevant item with kk non-relevant items at or above it lies beyond position k.
    top_neg = -np.sort(np.partition(-neg, kk - 1, axis=1)[:, :kk], axis=1)
    neg_at_or_above = (top_neg[:, None, :] >= top_pos[:, :, None]).sum(axis=2)  # [B, kk]
    j = np.arange(kk)
    position = 1 + j[None, :] + neg_at_or_above
    n_rel = np.diff(np.append(starts, len(rows)))
    hit = (j[None, :] < n_rel[:, None]) & (position <= k)
    precision = np.where(hit, (j[None, :] + 1) / position, 0.0)
    ap = precision.sum(axis=1) / np.minimum(n_rel, k)
    # Top-k for people to read; among equal scores, the lower gallery index first.
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    return ranks.astype(np.int64), ap, top.astype(np.int64)


def rank_queries(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_labels: Sequence[int] | np.ndarray,
    gallery_labels: Sequence[int] | np.ndarray,
    k: int = 10,
    block: int = RANK_BLOCK,
    normalise: bool = True,
) -> Ranking:
    """Rank the gallery for every query by cosine (dot product when ``normalise`` is False);
    gallery items whose label equals the query's are relevant. Queries are scored ``block`` at a
    time (fewer when the gallery is huge), keeping only each query's rank, AP@k and top k."""
    queries = _check_vectors("queries", queries)
    gallery = _check_vectors("gallery", gallery)
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries are {queries.shape[1]}-D but the gallery is {gallery.shape[1]}-D")
    if len(gallery) == 0:
        raise ValueError("empty gallery")
    q_lab = np.asarray(query_labels)
    g_lab = np.asarray(gallery_labels)
    if q_lab.shape != (len(queries),) or g_lab.shape != (len(gallery),):
        raise ValueError(f"{q_lab.shape} query labels for {len(queries)} queries, "
                         f"{g_lab.shape} gallery labels for {len(gallery)} items")
    if k < 1 or block < 1:
        raise ValueError(f"k ({k}) and block ({block}) must be >= 1")
    norms = _row_norms(gallery) if normalise else None
    step = _block_rows(len(gallery), block)
    parts = []
    for start in range(0, len(queries), step):
        rel = q_lab[start : start + step, None] == g_lab[None, :]
        empty = ~rel.any(axis=1)
        if empty.any():
            q = start + int(np.flatnonzero(empty)[0])
            raise ValueError(f"query {q} (label {q_lab[q]!r}) has no relevant item in the gallery")
        scores = _cosine_block(queries[start : start + step], gallery, norms)
        parts.append((*_rank_block(scores, rel, k), rel.sum(axis=1)))
    if not parts:
        raise ValueError("no queries")
    ranks, ap, top, n_rel = (np.concatenate(p) for p in zip(*parts))
    return Ranking(ranks=ranks, ap=ap, n_relevant=n_rel.astype(np.int64), top=top,
                   n_gallery=len(gallery), k=k)


def _block_rows(n_gallery: int, block: int) -> int:
    """Queries per block: ``block``, fewer when the gallery is so large that block x gallery
    would pass MAX_BLOCK_CELLS."""
    if block < 1:
        raise ValueError(f"block ({block}) must be >= 1")
    return max(1, min(block, MAX_BLOCK_CELLS // max(1, n_gallery)))


def blocked_positive_ranks(queries: np.ndarray, gallery: np.ndarray, positives,
                           block: int = RANK_BLOCK) -> np.ndarray:
    """``positive_ranks(cosine_matrix(queries, gallery), positives)`` (same pessimistic ties)
    with ``block`` queries scored at a time: memory block x G, never Q x G.

    The same numbers up to BLAS rounding: a block's product may differ from the same rows of
    the whole product in the last bit, so a rank can move only where two cosines are that close."""
    queries = _check_vectors("queries", queries)
    gallery = _check_vectors("gallery", gallery)
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"queries are {queries.shape[1]}-D but the gallery is {gallery.shape[1]}-D")
    sets = _positive_sets(positives, len(queries))
    sizes = np.array([len(p) for p in sets], dtype=np.int64)
    if (sizes == 0).any():
        raise ValueError(f"query {int(np.flatnonzero(sizes == 0)[0])} has no positive")
    rows = np.repeat(np.arange(len(sets)), sizes)
    cols = np.fromiter((i for p in sets for i in p), dtype=np.int64, count=int(sizes.sum()))
    if cols.size and (cols.min() < 0 or cols.max() >= len(gallery)):
        raise ValueError(f"positive indices must be in 0..{len(gallery) - 1}, got {cols.min()}..{cols.max()}")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    norms = _row_norms(gallery)  # cosines, as cosine_matrix's
    step = _block_rows(len(gallery), block)
    ranks = []
    for lo in range(0, len(queries), step):
        hi = min(lo + step, len(queries))
        cells = slice(starts[lo], starts[hi])
        scores = _cosine_block(queries[lo:hi], gallery, norms)
        ranks.append(_best_ranks(scores, rows[cells] - lo, scores[rows[cells] - lo, cols[cells]],
                                 starts[lo:hi] - starts[lo]))
    return np.concatenate(ranks).astype(np.int64) if ranks else np.zeros(0, np.int64)


def blocked_retrieval_metrics(queries: np.ndarray, gallery: np.ndarray, positives,
                              block: int = RANK_BLOCK) -> dict[str, float]:
    """``retrieval_metrics(cosine_matrix(queries, gallery), positives)`` computed in blocks
    (``blocked_positive_ranks``): for validation over thousands of clips."""
    return metrics_from_ranks(blocked_positive_ranks(queries, gallery, positives, block))


def ranking_metrics(ranking: Ranking) -> dict[str, float]:
    """R@1/5/10 (any relevant item in the top k), MRR, mAP@k and the median rank (1-based)."""
    out = metrics_from_ranks(ranking.ranks)
    out[f"mAP@{ranking.k}"] = float(ranking.ap.mean())
    out["median_rank"] = float(np.median(ranking.ranks))
    return out


def _first_hit_survival(n_gallery: int, n_relevant: int) -> np.ndarray:
    """S[r] = P(first relevant item lies below position r), r = 0..G, for a uniformly random
    order of G items of which R are relevant: C(G-r, R) / C(G, R)."""
    r = np.arange(1, n_gallery + 1)
    ratio = np.clip((n_gallery - r + 1 - n_relevant) / (n_gallery - r + 1), 0.0, 1.0)
    return np.concatenate([[1.0], np.cumprod(ratio)])


def _chance_ap(n_gallery: int, n_relevant: int, k: int) -> float:
    """E[AP@k] of a random order (exact): sum over positions i <= k of
    P(i relevant) * E[precision@i | i relevant] = (R/G) * (1 + (i-1)(R-1)/(G-1)) / i, over min(R, k)."""
    i = np.arange(1, min(k, n_gallery) + 1)
    others = (i - 1) * (n_relevant - 1) / (n_gallery - 1) if n_gallery > 1 else 0.0 * i
    return float(((n_relevant / n_gallery) * (1 + others) / i).sum() / min(n_relevant, k))


def ranking_chance(n_gallery: int, n_relevant: Sequence[int] | np.ndarray, k: int = 10) -> dict[str, float]:
    """The expected ``ranking_metrics`` of a random scorer, exactly, for queries with
    ``n_relevant[q]`` relevant items among ``n_gallery``. ``median_rank`` is the median of the
    queries' pooled first-hit distribution ((G+1)/2 with one relevant item), what the observed
    median tends to over many random queries."""
    n_rel = np.asarray(n_relevant, dtype=np.int64)
    if n_gallery < 1 or n_rel.size == 0:
        raise ValueError(f"no chance level for {n_rel.size} queries over {n_gallery} gallery items")
    if n_rel.min() < 1 or n_rel.max() > n_gallery:
        raise ValueError(f"relevant items per query must be 1..{n_gallery}, got {n_rel.min()}..{n_rel.max()}")
    values, counts = np.unique(n_rel, return_counts=True)
    weights = counts / counts.sum()
    out = {f"R@{k_}": 0.0 for k_ in KS}
    out["MRR"] = 0.0
    out[f"mAP@{k}"] = 0.0
    cdf = np.zeros(n_gallery + 1)
    r = np.arange(1, n_gallery + 1)
    for n, w in zip(values, weights):
        surv = _first_hit_survival(n_gallery, int(n))
        for k_ in KS:
            out[f"R@{k_}"] += w * (1.0 - surv[min(k_, n_gallery)])
        out["MRR"] += w * float(((surv[:-1] - surv[1:]) / r).sum())
        out[f"mAP@{k}"] += w * _chance_ap(n_gallery, int(n), k)
        cdf += w * (1.0 - surv)
    first = int(np.argmax(cdf >= 0.5 - 1e-12))
    out["median_rank"] = first + 0.5 if abs(cdf[first] - 0.5) < 1e-12 else float(first)
    return {key: float(v) for key, v in out.items()}


def retrieval_both_ways(
    text: np.ndarray, text_track: Sequence[int] | np.ndarray, audio: np.ndarray,
    audio_track: Sequence[int] | np.ndarray | None = None, k: int = 10, block: int = RANK_BLOCK,
) -> tuple[dict, dict[str, Ranking]]:
    """Text->audio (every caption a query against every audio vector; its track's audio relevant)
    and audio->text (every audio vector a query against every caption; all of its track's
    captions relevant), each with its chance level. ``text_track[i]``/``audio_track[j]``: the
    track of caption i / audio row j; by default audio row j is track j (one vector per track)."""
    text_track = np.asarray(text_track, dtype=np.int64)
    audio_track = np.arange(len(audio)) if audio_track is None else np.asarray(audio_track, dtype=np.int64)
    if text_track.shape != (len(text),) or audio_track.shape != (len(audio),):
        raise ValueError(f"{text_track.shape} track indices for {len(text)} captions, "
                         f"{audio_track.shape} for {len(audio)} audio vectors")
    uncaptioned = np.setdiff1d(audio_track, text_track)
    if uncaptioned.size:
        raise ValueError(f"track {int(uncaptioned[0])} has no caption ({uncaptioned.size} tracks without one)")
    silent = np.setdiff1d(text_track, audio_track)
    if silent.size:
        raise ValueError(f"track {int(silent[0])} has captions but no audio vector ({silent.size} such tracks)")
    t2a = rank_queries(text, audio, text_track, audio_track, k=k, block=block)
    a2t = rank_queries(audio, text, audio_track, text_track, k=k, block=block)
    summary = {
        "n_tracks": int(np.unique(audio_track).size),
        "n_audio": len(audio),
        "n_captions": len(text),
        "text_to_audio": ranking_metrics(t2a),
        "audio_to_text": ranking_metrics(a2t),
        "chance_text_to_audio": ranking_chance(t2a.n_gallery, t2a.n_relevant, k),
        "chance_audio_to_text": ranking_chance(a2t.n_gallery, a2t.n_relevant, k),
    }
    return summary, {"text_to_audio": t2a, "audio_to_text": a2t}


def pos_neg_cosines(
    text: np.ndarray, text_track: Sequence[int] | np.ndarray, audio: np.ndarray,
    audio_track: Sequence[int] | np.ndarray | None = None, max_pairs: int = 100_000, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of (caption, audio) pairs of one track (positives) and of different tracks
    (negatives): every pair when there are at most ``max_pairs``, else a seeded sample of that
    many pairs; never the full captions x audio matrix, nor a float64 copy of either set."""
    text_track = np.asarray(text_track, dtype=np.int64)
    audio_track = np.arange(len(audio)) if audio_track is None else np.asarray(audio_track, dtype=np.int64)
    total = len(text) * len(audio)
    if total <= max_pairs:
        qi, gi = np.divmod(np.arange(total), len(audio))
    else:
        rng = np.random.default_rng(seed)
        qi, gi = rng.integers(len(text), size=max_pairs), rng.integers(len(audio), size=max_pairs)
    same = text_track[qi] == audio_track[gi]
    cos = pair_cosines(text, audio, qi, gi)
    if total > max_pairs:  # a sample holds few positives: take every positive pair instead
        return pair_cosines(text, audio, *positive_pairs(text_track, audio_track)), cos[~same]
    return cos[same], cos[~same]


def pair_cosines(a: np.ndarray, b: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
    """[P] float64 cosine of a[rows_a[p]] and b[rows_b[p]], ``chunk_rows`` pairs gathered at a time."""
    out = np.empty(len(rows_a), dtype=np.float64)
    step = chunk_rows(a.shape[1])
    for lo in range(0, len(rows_a), step):
        x = unit_rows(np.asarray(a[rows_a[lo : lo + step]], np.float64))
        y = unit_rows(np.asarray(b[rows_b[lo : lo + step]], np.float64))
        out[lo : lo + step] = (x * y).sum(axis=1)
    return out


def positive_pairs(text_track: np.ndarray, audio_track: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(caption rows, audio rows) of every caption-audio pair of one track, caption-major."""
    by_track: dict[int, list[int]] = {}
    for j, t in enumerate(np.asarray(audio_track)):
        by_track.setdefault(int(t), []).append(j)
    pairs = [(q, j) for q, t in enumerate(np.asarray(text_track)) for j in by_track.get(int(t), [])]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    q, j = np.array(pairs, dtype=np.int64).T
    return q, j
