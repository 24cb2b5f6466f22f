"""Download (or render) one shard into the raw-shard layout of schema.py."""

from __future__ import annotations

import logging
import time

from musictext import layout, schema, storage
from musictext.ingest.registry import get_source, validate_shard
from musictext.rejects import Rejections

log = logging.getLogger(__name__)


def _check_rows(rows: list[dict], rejections: Rejections) -> list[dict]:
    """Keep rows that carry every TRACK_FIELDS key and a unique track id; reject the rest."""
    kept, seen = [], set()
    for row in rows:
        item = str(row.get("track_id", "<no track_id>"))
        missing = [f for f in schema.TRACK_FIELDS if f not in row]
        if missing:
            rejections.add(item, f"manifest row lacks {missing}")
        elif item in seen:
            rejections.add(item, "duplicate track id in shard")
        else:
            seen.add(item)
            kept.append({f: row[f] for f in schema.TRACK_FIELDS})
    return kept


def download_shard(shard: dict, out_dir: str) -> dict:
    """Write manifest.jsonl, audio/<track>.* and rejected.jsonl for one shard spec."""
    shard = validate_shard(shard)
    handler = get_source(shard["source"])
    storage.makedirs(out_dir)
    rejections = Rejections("download")
    started = time.monotonic()
    rows = _check_rows(handler.download_shard(shard, out_dir, rejections), rejections)
    storage.write_jsonl(storage.join(out_dir, layout.MANIFEST), rows)
    rejections.write(out_dir)
    seconds = time.monotonic() - started
    log.info("shard %s/%s of %s: %d tracks, %d rejected in %.1f s", shard["shard"],
             shard["num_shards"], shard["source"], len(rows), len(rejections), seconds)
    return {
        "source": shard["source"],
        "shard": shard["shard"],
        "tracks": len(rows),
        "rejected": len(rejections),
        "seconds": round(seconds, 2),
        "seconds_per_track": round(seconds / max(1, len(rows) + len(rejections)), 3),
    }
