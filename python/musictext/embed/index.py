"""The shard index: which clip and target shards (local paths or bucket URIs) form the corpus.

KFP cannot hand a ``dsl.Collected`` list into a second ``ParallelFor`` (the per-family loop), so
one small task records the shard URIs and every family task reads them through fsspec.
Per family, ``gather_targets`` lists that family's target shards (no copy) for training. The
index is also where the shards meet: a clip id in two shards, or a row that is not a valid
clip, is dropped there once (``merge_clips``), and text and targets both leave it out.
"""

from __future__ import annotations

import pyarrow as pa

from musictext import layout, storage
from musictext.corpus_stats import corpus_stats, stats_markdown
from musictext.manifest import ClipRow, read_clip_rows
from musictext.rejects import Rejections, read_rejections

MERGE_STAGE = "merge_shards"
# In a family's gathered targets dir: the target shards that lost rows to the index, rewritten.
KEPT_DIR = "kept"


# What the corpus statistics read of a clip (kept as plain dicts: a million models would not fit).
STATS_FIELDS = {"clip_id", "source", "split", "captions", "start_s", "end_s"}


def merge_clips(shard_uris: list[str], rejections: Rejections) -> tuple[list[dict], dict[str, list[str]]]:
    """Every valid clip row (``manifest.ClipRow``) once, as its STATS_FIELDS, and the clip ids
    dropped from each shard.

    A clip id in several shards is kept in the first (index order) and dropped from the others,
    so text, targets and splits hold it once; a row that is not a valid ClipRow is dropped from
    its shard. Each drop is recorded in ``rejections`` with its shard.
    """
    kept: list[dict] = []
    dropped: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for shard in shard_uris:
        before = len(rejections)
        rows = read_clip_rows(shard, ClipRow, rejections)
        # Rows refused by the row check are named by their clip id (when they have one).
        dropped[shard] = [r["item"] for r in rejections.rows[before:]]
        for row in rows:
            if row.clip_id in first:
                rejections.add(row.clip_id, f"duplicate clip id: dropped from {shard}, kept in {first[row.clip_id]}")
                dropped[shard].append(row.clip_id)
                continue
            first[row.clip_id] = shard
            kept.append(row.model_dump(include=STATS_FIELDS))
    return kept, {shard: ids for shard, ids in dropped.items() if ids}


def write_index(shard_uris: list[str], out_dir: str, target_uris: list[str] | None = None,
                upstream_dirs: list[str] | None = None) -> dict:
    """Record the clip (and target) shard URIs, every rejection of the listing, download and
    clip stages (``upstream_dirs``: the listing and raw shard dirs) and of this merge (bad clip
    rows, cross-shard duplicates: ``merge_clips``), the clips dropped from each shard
    ("dropped", which text preparation and ``gather_targets`` leave out), and the corpus
    statistics of the kept clips (``corpus.md``). ``target_uris[i]`` holds the targets of
    ``shard_uris[i]`` (one embedding task per clip shard)."""
    if not shard_uris:
        raise ValueError("no clip shards to index: every download/clip task produced nothing")
    missing = [u for u in shard_uris if not storage.exists(storage.join(u, layout.CLIPS))]
    if missing:
        raise FileNotFoundError(f"clip shards without {layout.CLIPS}: {missing}")
    if target_uris and len(target_uris) != len(shard_uris):
        raise ValueError(f"{len(target_uris)} target shards for {len(shard_uris)} clip shards: one each expected")
    rejected = [row for uri in [*(upstream_dirs or []), *shard_uris] for row in read_rejections(uri)]
    merge = Rejections(MERGE_STAGE)
    clips, dropped = merge_clips(list(shard_uris), merge)
    rejected.extend(merge.rows)
    stats = corpus_stats(clips, rejected)
    index = {"shards": list(shard_uris), "targets": list(target_uris or []), "rejected": rejected,
             "dropped": dropped, "corpus": stats}
    storage.write_json(storage.join(out_dir, layout.INDEX), index)
    storage.write_bytes(storage.join(out_dir, layout.CORPUS_MD), stats_markdown(stats, "Clips per source").encode())
    return {"shards": len(shard_uris), "target_shards": len(index["targets"]), "clips": len(clips),
            "rejected": len(rejected), "dropped": sum(len(ids) for ids in dropped.values())}


def _kept_rows(uri: str, drop: set[str]) -> pa.Table | None:
    """The target shard without the ``drop`` ids, or None when none of them is in it."""
    ids = storage.read_parquet(uri, columns=["clip_id"]).column("clip_id").to_pylist()
    keep = [c not in drop for c in ids]
    if all(keep):
        return None
    return storage.read_parquet(uri).filter(pa.array(keep))


def gather_targets(index_dir: str, family: str, out_dir: str) -> dict:
    """One family's targets as a dataset: the list of its shard files, their meta and rejections.

    Nothing is copied where it can be avoided: readers (``target_files``) open the listed Parquet
    files where they are. A shard holding clips the index dropped (``write_index``: duplicates of
    an earlier shard's clips, bad rows) is listed as a copy without them, so each clip id has one
    target, as it has one set of captions. Only such a shard is opened here: the index alone
    decides which copy of a clip id stays (text preparation reads the same "dropped").
    """
    index = layout.read_index(index_dir)
    shard_dirs = [storage.join(uri, family) for uri in index["targets"]]
    if not shard_dirs:
        raise ValueError(f"{index_dir}: the index lists no target shards")
    metas = []
    for shard_dir in shard_dirs:
        meta_uri = storage.join(shard_dir, layout.META)
        if not storage.exists(meta_uri):
            raise FileNotFoundError(f"target shard {shard_dir} has no {layout.META}: its embedding did not finish")
        metas.append(storage.read_json(meta_uri))
    dims = {m["target_dim"] for m in metas}
    if len(dims) != 1:
        raise ValueError(f"{family}: target shards disagree on the dimension: {sorted(dims)}")
    dropped = index.get("dropped") or {}
    clip_shards = index["shards"] if len(index["shards"]) == len(shard_dirs) else [None] * len(shard_dirs)
    files: list[str] = []
    n = sum(int(m["n"]) for m in metas)  # each shard's row count, one per clip id (embed_clips)
    for k, (shard_dir, clip_shard) in enumerate(zip(shard_dirs, clip_shards)):
        uri = storage.join(shard_dir, layout.TARGETS)
        drop = set(dropped.get(clip_shard, ()))
        kept = _kept_rows(uri, drop) if drop else None
        if kept is not None:
            n -= int(metas[k]["n"]) - kept.num_rows
            uri = storage.join(out_dir, KEPT_DIR, f"{k:05d}-{layout.TARGETS}")
            storage.write_parquet(uri, kept)
        files.append(uri)
    rejected = [row for shard_dir in shard_dirs for row in read_rejections(shard_dir)]
    meta = {k: v for k, v in metas[0].items() if k not in ("inputs", "fingerprint", "skipped")}
    meta.update(n=n, n_rejected=len(rejected), shards=len(shard_dirs))
    storage.write_json(storage.join(out_dir, layout.TARGET_SHARDS), {"files": files})
    storage.write_jsonl(storage.join(out_dir, layout.REJECTED), rejected)
    storage.write_json(storage.join(out_dir, layout.META), meta)
    return {"family": family, "targets": meta["n"], "shards": len(files), "rejected": len(rejected)}
