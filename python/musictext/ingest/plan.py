"""The listing step: every source's records, made leak-free, cut into shards for the fan-out.

1. each source's records (parsed from its published metadata; bad rows rejected), at most
   ``corpus_size`` per source (a seeded sample, stable across runs);
2. duplicates across sources merged: the same audio (one locator, one span) is one item,
   keeping every source's captions and tags (MusicCaps and AudioSet share YouTube segments);
3. splits made leak-free: a group with any test record is test everywhere, else valid if any
   record is valid (standard test sets stay test: MusicCaps' AudioSet eval, Song Describer's
   valid subset, MusicBench's test clips and their augmentations);
4. shards of ``shard_size`` records per source, ordered by where the audio comes from (so a
   shard reads few archives), each written as its own JSON-lines file.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from musictext import storage
from musictext.corpus_stats import corpus_stats, stats_markdown
from musictext.ingest.base import ListContext
from musictext.ingest.records import ArchiveAudio, Record, write_records
from musictext.ingest.registry import check_plan_args, check_sources, get_source, source_options
from musictext.rejects import Rejections

log = logging.getLogger(__name__)

SPLIT_RANK = {"test": 2, "valid": 1, "train": 0}
LISTING_SUMMARY = "listing.json"
LISTING_STATS = "stats.md"  # per-source counts of the listed records (Markdown)
# The source options the listing used: the download tasks read them from here, so a shard is
# fetched with exactly the options it was listed with.
OPTIONS_FILE = "options.json"
# Shards a listing cuts at most unless told otherwise: a wider cut is made with larger shards
# (docs/fanout.md; the pipeline asks for its own, narrower fan-out limit).
MAX_SHARDS = 20000


def source_records(name: str, options: dict, limit: int | None, seed: int, rejections: Rejections) -> list[Record]:
    """One source's records, at most ``limit`` (a seeded sample, in the source's own order)."""
    source = get_source(name)
    opts = source.options(source_options(options, name))
    ctx = ListContext(seed=seed, limit=limit, rejections=rejections)
    records = list(source.records(opts, ctx))
    if limit is not None and len(records) > limit:
        keep = set(sorted(range(len(records)), key=lambda i: _rank(seed, records[i].track_id))[:limit])
        records = [r for i, r in enumerate(records) if i in keep]
    log.info("%s: %d records", name, len(records))
    return records


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()


def _span_key(r: Record) -> tuple:
    """The same audio: one locator (a YouTube id, an archive member...) and one span. Records of
    one group with other audio (MusicBench's augmentations of a MusicCaps clip, Song
    Describer's 2-minute cut of an MTG-Jamendo track) stay apart and only share the split."""
    span = lambda x: None if x is None else round(x, 1)  # noqa: E731 -- 11.1 s in one CSV is 11.100 in another
    return r.audio.model_dump_json(), span(r.start_s), span(r.end_s)


def merge_duplicates(records: Iterable[Record]) -> tuple[list[Record], int]:
    """One record per audio and span: the first one seen, with every duplicate's captions, tags
    and licences added. Returns (records, how many were merged away)."""
    kept: dict[tuple, Record] = {}
    merged = 0
    for r in records:
        key = _span_key(r)
        first = kept.get(key)
        if first is None:
            kept[key] = r
            continue
        merged += 1
        first.captions = list(dict.fromkeys(first.captions + r.captions))
        first.tags = list(dict.fromkeys(first.tags + r.tags))
        if r.licence not in first.licence:
            first.licence = f"{first.licence}; {r.source}: {r.licence}"
        if SPLIT_RANK[r.split] > SPLIT_RANK[first.split]:
            first.split = r.split
        first.meta = {**first.meta, "merged_from": first.meta.get("merged_from", []) + [r.track_id]}
    return list(kept.values()), merged


def resolve_splits(records: list[Record]) -> int:
    """Give every record its group's strictest split (test > valid > train); the number moved."""
    strictest: dict[str, str] = {}
    for r in records:
        if SPLIT_RANK[r.split] > SPLIT_RANK.get(strictest.get(r.group, "train"), 0):
            strictest[r.group] = r.split
    moved = 0
    for r in records:
        split = strictest.get(r.group, r.split)
        if split != r.split:
            r.split = split
            moved += 1
    return moved


def _locality(r: Record) -> tuple:
    ref = r.audio
    if isinstance(ref, ArchiveAudio):
        return (ref.urls[0], ref.member)
    return ("", r.track_id)


def shard_specs(records: list[Record], shard_size: int, seed: int) -> list[tuple[dict, list[Record]]]:
    """(spec, records) per shard: each source's records in audio-locality order, in chunks."""
    by_source: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_source[r.source].append(r)
    out = []
    for source, items in by_source.items():
        items.sort(key=_locality)
        chunks = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
        for i, chunk in enumerate(chunks):
            spec = {"source": source, "shard": i, "num_shards": len(chunks), "size": len(chunk), "seed": seed,
                    "records": f"{source}/shard-{i:05d}.jsonl"}
            out.append((spec, chunk))
    return out


def shard_count(per_source: dict[str, int], shard_size: int) -> int:
    """Shards of a listing cut per source into ``shard_size`` records (as shard_specs cuts them)."""
    return sum(math.ceil(n / shard_size) for n in per_source.values())


def fitting_shard_size(per_source: dict[str, int], shard_size: int, max_shards: int) -> int:
    """The smallest shard size of at least ``shard_size`` whose shards (records per source in
    ``per_source``) number at most ``max_shards``."""
    if max_shards < len(per_source):
        raise ValueError(f"max_shards {max_shards} is below the number of sources ({len(per_source)}): "
                         "each source needs a shard of its own")
    low, high = shard_size, max(shard_size, *per_source.values())  # at high: one shard per source
    while low < high:  # the count only falls as the size grows: bisect
        mid = (low + high) // 2
        if shard_count(per_source, mid) <= max_shards:
            high = mid
        else:
            low = mid + 1
    return low


def plan(
    sources: list[str], options: dict, corpus_size: int, shard_size: int, seed: int, out_dir: str,
    max_shards: int = MAX_SHARDS,
) -> list[dict]:
    """Write every shard's records under ``out_dir`` (plus rejected.jsonl, listing.json and stats.md);
    the shard specs, in order. A listing that ``shard_size`` would cut into more than
    ``max_shards`` shards is cut with the smallest larger size that fits (listing.json's
    shard_size is the size used)."""
    corpus_size, shard_size, seed = check_plan_args(corpus_size, shard_size, seed)
    check_sources(sources, options)
    rejections = Rejections("list")
    records: list[Record] = []
    for name in sources:
        records.extend(source_records(name, options, corpus_size, seed, rejections))
    if not records:
        raise ValueError(f"sources {sources} gave no usable records ({len(rejections)} rejected)")
    records, merged = merge_duplicates(records)
    moved = resolve_splits(records)
    per_source = dict(Counter(r.source for r in records))
    if shard_count(per_source, shard_size) > max_shards:
        wider = fitting_shard_size(per_source, shard_size, max_shards)
        log.warning("%d shards of %d records exceed the fan-out limit %d: cutting shards of %d records",
                    shard_count(per_source, shard_size), shard_size, max_shards, wider)
        shard_size = wider
    shards = shard_specs(records, shard_size, seed)
    storage.makedirs(out_dir)
    for spec, chunk in shards:
        write_records(storage.join(out_dir, spec["records"]), chunk)
    rejections.write(out_dir)
    storage.write_json(storage.join(out_dir, OPTIONS_FILE), {name: source_options(options, name) for name in sources})
    summary = listing_summary(records, merged, moved, len(rejections), len(shards)) | {"shard_size": shard_size}
    storage.write_json(storage.join(out_dir, LISTING_SUMMARY), summary)
    stats = corpus_stats([r.row() for r in records], rejections.rows)
    storage.write_bytes(storage.join(out_dir, LISTING_STATS), stats_markdown(stats, "Listed records per source").encode())
    log.info("listed %d records in %d shards (%d merged duplicates, %d moved to a stricter split, %d rejected)",
             len(records), len(shards), merged, moved, len(rejections))
    return [spec for spec, _ in shards]


def listing_summary(records: list[Record], merged: int, moved: int, rejected: int, shards: int) -> dict:
    per_source = Counter(r.source for r in records)
    splits = {s: dict(Counter(r.split for r in records if r.source == s)) for s in per_source}
    return {"records": len(records), "shards": shards, "merged": merged, "moved_split": moved,
            "rejected": rejected, "per_source": dict(per_source), "splits": splits}


def with_folder(options: dict | None, folder: str, sources: list[str]) -> dict:
    """``source_options`` with the pipeline's ``folder`` parameter as the folder source's dir."""
    out = {k: dict(v) for k, v in (options or {}).items()}
    if folder and "folder" not in sources:
        raise ValueError(f"folder={folder!r} is given but the `folder` source is not among the sources {sources}")
    if folder:
        out.setdefault("folder", {})["dir"] = folder
    return out
