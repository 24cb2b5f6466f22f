"""Search your own library: index its tracks into Milvus (Lite by default) with Navidrome's
collection schema, then query them with an exported text embedder.

- ``index_library(dir, family, profile, db, ...) -> summary dict`` (``index``)
- ``search(query, families, models_dir, db, top) -> list[Hit]`` (``query``); several families
  are fused with ``rrf_fuse`` (reciprocal-rank fusion, k=60)
- storage, schema and the default database: ``store``; the reduced basis that puts MERT's
  76,800-D space into Milvus: ``basis``
"""

from musictext.search.basis import BASIS_FILE, ReducedBasis, load_basis
from musictext.search.index import index_library
from musictext.search.query import RRF_K, Hit, format_hits, rrf_fuse, search
from musictext.search.store import MILVUS_MAX_DIM, collection_name, default_db

__all__ = [
    "BASIS_FILE", "MILVUS_MAX_DIM", "RRF_K", "Hit", "ReducedBasis", "collection_name", "default_db",
    "format_hits", "index_library", "load_basis", "rrf_fuse", "search",
]
