"""The Song Describer Dataset (SDD): 1.1k crowd-written captions of 706 MTG-Jamendo tracks.

Published on Zenodo (record 10072001, https://zenodo.org/record/10072001/files/<name>):

- ``song_describer.csv`` (pandas ``to_csv``): ``caption_id,track_id,caption,is_valid_subset,
  familiarity,artist_id,album_id,path,duration``, one row per caption. Integer ids; captions may
  hold commas, quotes and line breaks (quoted fields: read with the csv module); ``is_valid_subset``
  is tri-state ``True``/``False``/empty (empty = not validated); ``path`` is MTG-Jamendo's
  ``NN/<id>.mp3`` (NN = id % 100); ``duration`` is the original track's length.
- ``audio.zip``: the first two minutes of each track, 320 kbps 44.1 kHz MP3, as
  ``audio/NN/<id>.2min.mp3`` (the zip's top folder is ``audio/``: option ``zip_member_prefix``).
- ``audio_licenses.txt``: the per-track CC licences, in MTG-Jamendo's four-line-block layout
  (read when present; the layout of the Zenodo copy is unverified: one-line variants are read too).
- ``song_describer.mtg-jamendo.tsv`` (named by the data card, unverified): MTG-Jamendo's rows for
  these tracks; when present its tags fill ``tags``.

Records: one per track with all its non-empty captions (several per track: query-to-track
retrieval), the whole 2-minute excerpt as one clip (phase 2). Split: the validated subset (any
caption of the track with ``is_valid_subset=True``, 546/547 tracks) is the standard evaluation
set, so those tracks are ``test``; the other tracks are ``train`` with a hashed ``valid`` share
(``valid_fraction``). Groups are ``jamendo:<id>``, shared with the ``jamendo`` source (all SDD
tracks come from MTG-Jamendo's split-0 test set).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from musictext import storage
from musictext.ingest.base import (
    PublishedFile,
    Source,
    SourceOptions,
    ValidFractionOptions,
    archive_member,
    find_published,
    published_text,
    rejecting,
)
from musictext.ingest.records import ArchiveAudio, Record, make_record
from musictext.ingest.sources.jamendo import (
    group_key,
    licence_meta,
    read_audio_licences,
    read_tracks,
    tag_facets,
)
from musictext.rejects import Rejections

RECORD_URL = "https://zenodo.org/record/10072001/files"
CSV_NAME = "song_describer.csv"
ZIP_NAME = "audio.zip"
LICENCES_TXT = "audio_licenses.txt"
JAMENDO_TSV = "song_describer.mtg-jamendo.tsv"
CAPTION_LICENCE = "CC-BY-SA-4.0"
LICENCE = f"{CAPTION_LICENCE} (captions); audio: CC (Jamendo)"
REQUIRED_COLUMNS = ("caption_id", "track_id", "caption", "is_valid_subset")

_INT = re.compile(r"\s*(\d+)(?:\.0+)?\s*")
_PATH = re.compile(r"(\d{2})/(\d+)\.mp3")
_TRUE = {"true", "1", "1.0", "yes"}
_FALSE = {"false", "0", "0.0", "no", "", "nan", "none"}


class SongDescriberOptions(ValidFractionOptions):
    # Folder the audio sits in inside audio.zip ("audio/" in the Zenodo file; "" for a zip of the
    # NN/ folders themselves).
    zip_member_prefix: str = "audio/"


def _int(value: str | None) -> int | None:
    m = _INT.fullmatch(value or "")
    return int(m.group(1)) if m else None


def _float(value: str | None) -> float | None:
    try:
        x = float(value or "")
    except ValueError:
        return None
    return x if math.isfinite(x) else None


@dataclass
class _Track:
    id: int
    captions: list[str] = field(default_factory=list)
    caption_ids: list = field(default_factory=list)
    familiarity: list = field(default_factory=list)
    valid_caption_ids: list = field(default_factory=list)
    validated: bool = False  # any row of the track (kept or dropped) is in the validated subset
    artist_id: int | None = None
    album_id: int | None = None
    path: str | None = None
    duration_s: float | None = None


def read_captions(data: bytes, rejections: Rejections) -> dict[int, _Track]:
    """Caption rows grouped by track, in order of first appearance; bad rows are rejected."""
    reader = csv.DictReader(io.StringIO(published_text(data, CSV_NAME, rejections), newline=""))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{CSV_NAME} lacks columns {missing} (header {reader.fieldnames})")
    tracks: dict[int, _Track] = {}
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        item = f"{CSV_NAME}:{start}"
        tid = _int(row.get("track_id"))
        if tid is None:
            rejections.add(item, f"bad track_id {row.get('track_id')!r}")
            continue
        flag = (row.get("is_valid_subset") or "").strip().lower()
        if flag not in _TRUE and flag not in _FALSE:
            # Unknown: neither trusted as train (it may be an evaluation caption) nor as test.
            rejections.add(item, f"bad is_valid_subset {row.get('is_valid_subset')!r} (want True, False or empty)")
            continue
        track = tracks.setdefault(tid, _Track(tid))
        valid = flag in _TRUE
        track.validated = track.validated or valid
        caption_id = _int(row.get("caption_id"))
        caption_id = caption_id if caption_id is not None else (row.get("caption_id") or "").strip() or None
        caption = (row.get("caption") or "").strip()
        if not caption:
            rejections.add(item, f"empty caption (caption_id {caption_id}, track {tid}): dropped")
            continue
        track.captions.append(caption)
        track.caption_ids.append(caption_id)
        track.familiarity.append(_int(row.get("familiarity")))
        if valid:
            track.valid_caption_ids.append(caption_id)
        track.artist_id = track.artist_id if track.artist_id is not None else _int(row.get("artist_id"))
        track.album_id = track.album_id if track.album_id is not None else _int(row.get("album_id"))
        track.path = track.path or (row.get("path") or "").strip() or None
        track.duration_s = track.duration_s if track.duration_s is not None else _float(row.get("duration"))
    return tracks


def record_id(num: int) -> str:
    return f"song_describer-{num}"


class SongDescriberSource(Source):
    """Song Describer Dataset: several human captions per 2-minute Jamendo excerpt."""

    name: ClassVar[str] = "song_describer"
    description: ClassVar[str] = (
        "Song Describer Dataset: ~1.1k human captions of 706 MTG-Jamendo tracks (2-minute "
        "excerpts from audio.zip); the validated subset is the test set"
    )
    phase: ClassVar[int] = 2
    Options: ClassVar[type[SourceOptions]] = SongDescriberOptions
    published: ClassVar[tuple[PublishedFile, ...]] = (
        PublishedFile(CSV_NAME, f"{RECORD_URL}/{CSV_NAME}"),
        PublishedFile(LICENCES_TXT, f"{RECORD_URL}/{LICENCES_TXT}", required=False),
        PublishedFile(JAMENDO_TSV, f"{RECORD_URL}/{JAMENDO_TSV}", required=False),
    )
    licence: ClassVar[str] = LICENCE

    def parse(self, meta_dir: str, opts: SourceOptions, rejections: Rejections) -> Iterator[Record]:
        assert isinstance(opts, SongDescriberOptions)
        tracks = read_captions(storage.read_bytes(find_published(meta_dir, CSV_NAME)), rejections)
        licences = read_audio_licences(meta_dir)
        jamendo_path = find_published(meta_dir, JAMENDO_TSV, required=False)
        jamendo = {}
        if jamendo_path is not None:
            try:
                jamendo = read_tracks(storage.read_bytes(jamendo_path), JAMENDO_TSV)
            except ValueError:  # not the MTG-Jamendo layout the data card suggests: no tags
                jamendo = {}
        base = opts.audio_base(RECORD_URL)

        for num, track in tracks.items():
            rid = record_id(num)
            if not track.captions:
                rejections.add(rid, "no non-empty caption")
                continue
            nn = f"{num % 100:02d}"
            if track.path is not None:
                m = _PATH.fullmatch(track.path)
                if not m or int(m.group(2)) != num or m.group(1) != nn:
                    rejections.add(rid, f"path {track.path!r} does not match track_id {num} (want {nn}/{num}.mp3)")
                    continue
            group = group_key(num)
            split = opts.split_of(group, track.validated)
            lic = licences.get(num)
            meta = {
                "duration_s": track.duration_s,
                "familiarity": track.familiarity,
                "caption_ids": track.caption_ids,
                "valid_caption_ids": track.valid_caption_ids,
                "artist_id": track.artist_id,
                "album_id": track.album_id,
                **licence_meta(lic),
            }
            tags: list[str] = []
            if num in jamendo:
                _, tags = tag_facets(jamendo[num].tags)
            with rejecting(rejections):
                yield make_record(
                    rid,
                    track_id=rid,
                    source=self.name,
                    split=split,
                    captions=track.captions,
                    tags=tags,
                    licence=f"{CAPTION_LICENCE} (captions); audio: {lic.name} (Jamendo)" if lic else LICENCE,
                    audio=ArchiveAudio(urls=(f"{base}/{ZIP_NAME}",), format="zip",
                                       member=archive_member(opts.zip_member_prefix, f"{nn}/{num}.2min.mp3")),
                    start_s=None,
                    end_s=None,
                    group=group,
                    whole_track=True,
                    meta=meta,
                )
