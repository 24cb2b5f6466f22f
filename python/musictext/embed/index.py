"""The shard index: which clip and target shards (local paths or bucket URIs) form the corpus.

KFP cannot hand a ``dsl.Collected`` list into a second ``ParallelFor`` (the per-family loop), so
one small task records the shard URIs and every family task reads them through fsspec.
Per family, ``gather_targets`` lists that family's target shards (no copy) for training.
"""

from __future__ import annotations

from musictext import layout, storage
from musictext.corpus_stats import corpus_stats, stats_markdown
from musictext.rejects import read_rejections


def write_index(shard_uris: list[str], out_dir: str, target_uris: list[str] | None = None,
                upstream_dirs: list[str] | None = None) -> dict:
    """Record the clip (and target) shard URIs, every rejection of the listing, download and
    clip stages (``upstream_dirs``: the listing and raw shard dirs), and the corpus statistics
    of the clips (``corpus.md``)."""
    if not shard_uris:
        raise ValueError("no clip shards to index: every download/clip task produced nothing")
    missing = [u for u in shard_uris if not storage.exists(storage.join(u, layout.CLIPS))]
    if missing:
        raise FileNotFoundError(f"clip shards without {layout.CLIPS}: {missing}")
    rejected = [row for uri in [*(upstream_dirs or []), *shard_uris] for row in read_rejections(uri)]
    clips = layout.read_clips(list(shard_uris), columns=["source", "split", "captions", "start_s", "end_s"])
    stats = corpus_stats(clips.to_pylist(), rejected)
    index = {"shards": list(shard_uris), "targets": list(target_uris or []), "rejected": rejected, "corpus": stats}
    storage.write_json(storage.join(out_dir, layout.INDEX), index)
    storage.write_bytes(storage.join(out_dir, layout.CORPUS_MD), stats_markdown(stats, "Clips per source").encode())
    return {"shards": len(shard_uris), "target_shards": len(index["targets"]), "clips": clips.num_rows,
            "rejected": len(rejected)}


def gather_targets(index_dir: str, family: str, out_dir: str) -> dict:
    """One family's targets as a dataset: the list of its shard files, their meta and rejections.

    Nothing is copied: readers (``target_files``) open the listed Parquet files where they are.
    """
    shard_dirs = [storage.join(uri, family) for uri in layout.read_index(index_dir)["targets"]]
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
    rejected = [row for shard_dir in shard_dirs for row in read_rejections(shard_dir)]
    meta = {k: v for k, v in metas[0].items() if k not in ("inputs", "fingerprint", "skipped")}
    meta.update(n=sum(int(m["n"]) for m in metas), n_rejected=len(rejected), shards=len(shard_dirs))
    files = [storage.join(d, layout.TARGETS) for d in shard_dirs]
    storage.write_json(storage.join(out_dir, layout.TARGET_SHARDS), {"files": files})
    storage.write_jsonl(storage.join(out_dir, layout.REJECTED), rejected)
    storage.write_json(storage.join(out_dir, layout.META), meta)
    return {"family": family, "targets": meta["n"], "shards": len(files), "rejected": len(rejected)}
