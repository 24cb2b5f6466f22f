"""The shard index: which clip-shard artifacts (local paths or bucket URIs) form the corpus.

KFP cannot hand a ``dsl.Collected`` list into a second ``ParallelFor`` (the per-family loop), so
one small task records the shard URIs and every family task reads them through fsspec.
"""

from __future__ import annotations

from musictext import schema, storage
from musictext.rejects import read_rejections

INDEX = "index.json"


def write_index(shard_uris: list[str], out_dir: str) -> dict:
    """Record the shard URIs plus the rejections the download/clip stages wrote into them."""
    if not shard_uris:
        raise ValueError("no clip shards to index: every download/clip task produced nothing")
    missing = [u for u in shard_uris if not storage.exists(storage.join(u, schema.CLIPS))]
    if missing:
        raise FileNotFoundError(f"clip shards without {schema.CLIPS}: {missing}")
    rejected = [row for uri in shard_uris for row in read_rejections(uri)]
    index = {"shards": list(shard_uris), "rejected": rejected}
    storage.write_json(storage.join(out_dir, INDEX), index)
    return {"shards": len(shard_uris), "rejected": len(rejected)}


def read_index(index_dir: str) -> list[str]:
    return list(storage.read_json(storage.join(index_dir, INDEX))["shards"])


def index_rejections(index_dir: str) -> list[dict]:
    return list(storage.read_json(storage.join(index_dir, INDEX)).get("rejected", []))
