"""``search``: a text query -> ranked tracks of an indexed library, in one space or fused.

One family: the query goes through the family's exported text embedder (``{name}_text_embedder``
under the models dir, a run's checkpoints/) and the collection is searched by cosine; the score
is the cosine similarity.

Several families: each space ranks its own top ``max(top, FUSION_DEPTH)`` tracks and the lists
are fused with reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009):
``score(track) = sum over spaces of 1 / (k + rank in that space)``, rank 1-based, ``k = 60`` (the
paper's value: it damps the weight of the very first ranks so one space cannot dominate). A
track absent from a space's list gets nothing from it. Tracks are the same across spaces when
their file path is. Cosines of different spaces are not comparable, ranks are: hence RRF.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from musictext.exports import export_name, family_of, find_exports, load_export
from musictext.search.basis import basis_in_export, load_basis
from musictext.search.store import default_db, open_for_search

RRF_K = 60
FUSION_DEPTH = 100
REDUCED_TAG = re.compile(r"\+pca(\d+)-([0-9a-f]{8})$")


@dataclass
class Hit:
    rank: int
    score: float  # cosine (one space) or RRF score (fused)
    name: str
    path: str
    found_by: dict[str, int] = field(default_factory=dict)  # space (Navidrome model id) -> its rank
    cosine: dict[str, float] = field(default_factory=dict)  # space -> cosine similarity

    def row(self) -> dict:
        return asdict(self)


def rrf_fuse(rankings: Mapping[str, Sequence[str]], k: int = RRF_K) -> list[tuple[str, float, dict[str, int]]]:
    """{space: [item, best first]} -> [(item, RRF score, {space: 1-based rank})], best first.

    Equal scores are ordered by the best single rank, then by the item (deterministic)."""
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for space, items in rankings.items():
        for rank, item in enumerate(items, 1):
            if space in ranks.get(item, {}):
                continue  # a space counts an item once, at its best rank
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
            ranks.setdefault(item, {})[space] = rank
    order = sorted(scores, key=lambda it: (-scores[it], min(ranks[it].values()), it))
    return [(item, scores[item], ranks[item]) for item in order]


def query_vector(text: str, family: str, exports: dict[str, str], store) -> np.ndarray:
    """The query in the space ``store`` holds: the family's text embedder, then the reduced basis
    when the collection is in one (its model_id says which, see search.basis)."""
    name = export_name(family)
    if name not in exports:
        raise LookupError(f"no {name}_text_embedder among the exports ({sorted(exports) or 'none'}): "
                          f"the {family} space cannot be queried")
    embedder = load_export(exports[name])
    vec = embedder.embed_text(text)
    tag = REDUCED_TAG.search(store.model_id or "")
    if tag:
        basis_uri = basis_in_export(exports[name])
        if basis_uri is None:
            raise LookupError(f"the {family} index is in a reduced space ({tag.group(0)[1:]}) but "
                              f"{exports[name]} has no reduced_basis.npz")
        basis = load_basis(basis_uri)
        if basis.fingerprint != tag.group(2):
            raise ValueError(f"{basis_uri} (sha {basis.fingerprint}) is not the basis the {family} index was "
                             f"built with (sha {tag.group(2)}); re-index")
        if vec.shape[0] == basis.source_dim:
            vec = basis.project(vec)
    if vec.shape[0] != store.dim:
        raise ValueError(f"{exports[name]} gives {vec.shape[0]}-D vectors but the {family} index holds "
                         f"{store.dim}-D ({store.model_id}): a model of another profile or family?")
    return vec


def search_space(text: str, family: str, exports: dict[str, str], db: str, limit: int):
    store = open_for_search(db, family)
    try:
        return store.search(query_vector(text, family, exports, store), limit)
    finally:
        store.close()


def search(query: str, families: Sequence[str], models_dir: str, db: str | None = None,
           top: int = 10) -> list[Hit]:
    """The ``top`` tracks of the library in ``db`` for ``query``: ranked by cosine in one
    family's space, or fused over several with RRF (module doc)."""
    if not query or not query.strip():
        raise ValueError("empty query")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    families = list(dict.fromkeys(family_of(f) for f in families))
    if not families:
        raise ValueError("no family to search")
    db = db or default_db()
    exports = find_exports(models_dir)
    depth = top if len(families) == 1 else max(top, FUSION_DEPTH)
    results = {export_name(f): search_space(query, f, exports, db, depth) for f in families}
    if len(results) == 1:
        space, matches = next(iter(results.items()))
        return [Hit(i, m.score, m.name, m.path, {space: i}, {space: m.score}) for i, m in enumerate(matches, 1)]
    by_path = {m.path: m for matches in results.values() for m in matches}
    cosines = {space: {m.path: m.score for m in matches} for space, matches in results.items()}
    fused = rrf_fuse({space: [m.path for m in matches] for space, matches in results.items()})
    return [Hit(i, score, by_path[path].name, path, ranks, {s: cosines[s][path] for s in ranks})
            for i, (path, score, ranks) in enumerate(fused[:top], 1)]


def format_hits(hits: Sequence[Hit], fused: bool = False) -> str:
    """One line per hit: rank, score, name, path; ``fused`` adds the spaces that found it,
    ``[space rank, ...]``."""
    lines = []
    for h in hits:
        spaces = "  [" + ", ".join(f"{s} {r}" for s, r in h.found_by.items()) + "]" if fused else ""
        lines.append(f"{h.rank:>3}  {h.score:7.4f}  {h.name}  {h.path}{spaces}")
    return "\n".join(lines)
