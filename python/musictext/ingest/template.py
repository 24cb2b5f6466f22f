"""A complete, minimal source to copy for a new dataset: audio files listed in a CSV.

The listing (local path or bucket URI) has a header and one row per track; ``path`` is relative
to the listing's folder::

    track_id,path,split,caption,licence
    a001,audio/a001.wav,train,slow sad piano with rain,CC-BY-4.0

What a new source writes, as here: a ``Source`` subclass with a ``name``, ``plan_shards`` (pin in
each spec what ``download_shard`` needs, here the listing) and ``download_shard`` (one small
function per item that raises ``ItemError`` for a bad item; the loop records it in the shard's
rejected.jsonl and keeps every other item). Then add an instance to ``BUILTIN_SOURCES`` in
``registry.py``.

This one is not in ``BUILTIN_SOURCES``: it needs a listing location, which the pipeline's
parameters (sources, corpus_size, shard_size, seed) cannot carry, so listing it would advertise
a source that fails for every user. Use it in one process with ``registry.registered``.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re

from musictext import schema, storage
from musictext.ingest.base import Source, even_shards
from musictext.rejects import ItemError, Rejections

LISTING_FIELDS = ("track_id", "path", "split", "caption", "licence")
# Track ids become file names under the shard dir: nothing that could leave it ("/", "..").
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def read_listing(uri: str) -> list[dict]:
    """The listing's rows; ValueError if its header lacks a field (that fails the whole run)."""
    # The csv module, not line splitting: CRLF rows and line breaks inside quoted captions.
    reader = csv.DictReader(io.StringIO(storage.read_bytes(uri).decode("utf-8-sig"), newline=""))
    missing = [f for f in LISTING_FIELDS if f not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"listing {uri} lacks columns {missing}")
    return list(reader)


class LocalFolderSource(Source):
    """Tracks listed in a CSV next to their audio; shards are row ranges of the listing."""

    def __init__(self, listing: str, name: str = "local-folder-template"):
        self.listing = listing
        self.name = name

    def plan_shards(self, corpus_size: int, shard_size: int, seed: int) -> list[dict]:
        count = min(corpus_size, len(read_listing(self.listing)))
        if count == 0:
            raise ValueError(f"listing {self.listing} has no tracks")
        # The seed means nothing to a fixed listing; it stays in the spec for the record.
        specs = even_shards(self.name, count, shard_size, seed)
        return [spec | {"listing": self.listing} for spec in specs]

    def download_shard(self, shard: dict, out_dir: str, rejections: Rejections) -> list[dict]:
        entries = read_listing(shard["listing"])[shard["start"] : shard["start"] + shard["size"]]
        folder = posixpath.dirname(shard["listing"])
        rows = []
        for entry in entries:
            try:
                rows.append(self._fetch(entry, folder, out_dir))
            except ItemError as err:
                rejections.add(err.item, err.reason)
        return rows

    def _fetch(self, entry: dict, folder: str, out_dir: str) -> dict:
        """Copy one track's audio into ``out_dir``; its manifest row, or ItemError."""
        # A short CSV row gives None for its missing fields.
        field = {k: (entry.get(k) or "").strip() for k in LISTING_FIELDS}
        if not _SAFE_ID.fullmatch(field["track_id"]):
            raise ItemError(field["track_id"] or "<no track_id>", "track id is empty or unsafe")
        track_id = f"{self.name}-{field['track_id']}"  # unique across sources, not just here
        if field["split"] not in schema.SPLITS:
            raise ItemError(track_id, f"split {field['split']!r} is not one of {schema.SPLITS}")
        for required in ("path", "caption", "licence"):
            if not field[required]:
                raise ItemError(track_id, f"no {required}")
        rel = f"audio/{track_id}{posixpath.splitext(field['path'])[1].lower()}"
        _copy_once(storage.join(folder, field["path"]), storage.join(out_dir, rel), track_id)
        return {
            "track_id": track_id,
            "source": self.name,
            "split": field["split"],
            "path": rel,
            "captions": [field["caption"]],
            "tags": [],  # this listing has none
            "licence": field["licence"],
        }


def _copy_once(src: str, dst: str, track_id: str) -> None:
    # Resumable: storage.write_bytes is atomic, so a file already at ``dst`` (from an earlier,
    # interrupted attempt at this shard) is complete and is not fetched again.
    if storage.exists(dst):
        return
    if not storage.exists(src):
        raise ItemError(track_id, f"audio file {src} not found")
    storage.write_bytes(dst, storage.read_bytes(src))
