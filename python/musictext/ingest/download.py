"""Download one shard: each record's audio into the raw-shard layout (``layout``: manifest.jsonl,
audio/, rejected.jsonl), several items at once, a bad item recorded and skipped.

Resumable: audio files are written atomically, so one already in ``out_dir`` (from an
interrupted attempt) is complete and its item is not fetched again; partial HTTP downloads
resume from the cache (``fetch``). The manifest is written last, so its presence means the
shard is done.
"""

from __future__ import annotations

import logging
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor

from musictext import layout, schema, storage
from musictext.ingest.archives import close_all
from musictext.ingest.fetch import Fetched, youtube_fetched
from musictext.ingest.plan import OPTIONS_FILE
from musictext.ingest.records import Record, origin, read_records
from musictext.ingest.registry import get_source, source_options, validate_shard
from musictext.logs import progress
from musictext.rejects import ItemError, Rejections

log = logging.getLogger(__name__)


def existing_audio(out_dir: str, track_ids: set[str]) -> dict[str, str]:
    """{track id: its audio file (relative)} that an earlier attempt completed, from one listing
    of ``out_dir``/audio (one call on a bucket, not one per item). Files are ``<track id><ext>``;
    temporaries of an interrupted write are not complete."""
    fs, base = storage.fs_for(storage.join(out_dir, "audio"))
    if not fs.exists(base):
        return {}
    found: dict[str, str] = {}
    for path in sorted(fs.ls(base, detail=False)):
        name = posixpath.basename(path)
        stem = posixpath.splitext(name)[0]
        if stem in track_ids and stem not in found and ".tmp-" not in name and not name.endswith(".part"):
            found[stem] = f"audio/{name}"
    return found


def manifest_row(record: Record, fetched: Fetched) -> dict:
    """The manifest row: the record plus the local file (``origin`` says where it came from)."""
    row = record.row()
    row.pop("audio")
    row.update(path=fetched.path, start_s=fetched.start_s, end_s=fetched.end_s, origin=origin(record.audio))
    return row


def _fetch_one(source, record: Record, out_dir: str, opts, done: dict[str, str]) -> dict:
    if record.track_id in done:
        return manifest_row(record, _resumed(record, done[record.track_id]))
    return manifest_row(record, source.fetch(record, out_dir, opts))


def _resumed(record: Record, rel: str) -> Fetched:
    if record.audio.kind == "youtube":
        return youtube_fetched(record, rel)
    return Fetched(rel, record.start_s, record.end_s)


def listed_options(records_dir: str) -> dict:
    """The source options the listing wrote next to the shards' records."""
    uri = storage.join(records_dir, OPTIONS_FILE)
    return storage.read_json(uri) if storage.exists(uri) else {}


def download_shard(shard: dict, records_dir: str, out_dir: str, options: dict | None = None) -> dict:
    """Fetch every record of ``shard`` (records under ``records_dir``) into ``out_dir``, with
    ``options`` or else the options the listing used."""
    shard = validate_shard(shard)
    if options is None:
        options = listed_options(records_dir)
    source = get_source(shard["source"])
    opts = source.options(source_options(options, source.name))
    records = list(read_records(storage.join(records_dir, shard["records"])))
    storage.makedirs(out_dir)
    rejections = Rejections("download")
    done = existing_audio(out_dir, {r.track_id for r in records})
    if done:
        log.info("resuming shard %s/%s: %d of %d items already fetched", shard["shard"], shard["num_shards"],
                 len(done), len(records))
    started = time.monotonic()
    rows: list[dict | None] = [None] * len(records)
    with ThreadPoolExecutor(max_workers=max(1, int(source.fetch_workers))) as pool:
        futures = [pool.submit(_fetch_one, source, r, out_dir, opts, done) for r in records]
        desc = f"fetch {shard['source']} shard {shard['shard']}"
        for i, fut in progress(list(enumerate(futures)), desc=desc):
            try:
                rows[i] = fut.result()
            except ItemError as err:
                rejections.add(err.item, err.reason)
            except (OSError, ValueError) as err:  # one item's I/O trouble never sinks the shard
                rejections.add(records[i].track_id, f"{type(err).__name__}: {err}")
    close_all()
    kept = [row for row in rows if row is not None]
    missing = [f for row in kept for f in schema.TRACK_FIELDS if f not in row]
    assert not missing, missing  # rows come from validated records
    storage.write_jsonl(storage.join(out_dir, layout.MANIFEST), kept)
    rejections.write(out_dir)
    seconds = time.monotonic() - started
    log.info("shard %s/%s of %s: %d tracks (%d resumed), %d rejected in %.1f s", shard["shard"],
             shard["num_shards"], shard["source"], len(kept), len(done), len(rejections), seconds)
    return {
        "source": shard["source"],
        "shard": shard["shard"],
        "tracks": len(kept),
        "resumed": len(done),
        "rejected": len(rejections),
        "seconds": round(seconds, 2),
        "seconds_per_track": round(seconds / max(1, len(kept) + len(rejections)), 3),
    }


def check_shard_records(shard: dict, records_dir: str) -> dict:
    """The dry run of one fan-out item: its records read and validated, counted by split."""
    shard = validate_shard(shard)
    records = list(read_records(storage.join(records_dir, shard["records"])))
    if len(records) != shard["size"]:
        raise ValueError(f"shard {shard['records']} holds {len(records)} records, its spec says {shard['size']}")
    splits: dict[str, int] = {}
    for r in records:
        splits[r.split] = splits.get(r.split, 0) + 1
    return {"source": shard["source"], "shard": shard["shard"], "records": len(records), **splits}
