"""The user's own music: a folder (local path or bucket URI) of audio files, captioned by the user.

There is no published metadata: the folder is the dataset, so ``records`` reads ``opts.dir``
directly (nothing is fetched) and ``parse`` treats its ``meta_dir`` as that folder, so
``musictext datasets records folder --metadata DIR`` reads the same records.

Captions, in order of preference:

1. ``DIR/captions.csv``: header ``path,caption`` and optional ``split``, ``tags`` columns (any
   order, any case). ``path`` is relative to DIR; several rows naming one path give it several
   captions; ``tags`` are separated by ``;``. Read with the csv module (quoted commas, quotes and
   line breaks, CRLF or LF) and decoded as strict UTF-8: a row holding bytes that are not UTF-8
   is rejected with the byte offset of the first bad byte (a UTF-8 BOM is allowed).
2. ``DIR/captions.jsonl``: one ``{"path", "captions": [...], "split"?, "tags"?}`` per line; a bad
   line is rejected, the others kept.
3. Neither: captions built from the files' own tags (genre and mood, read with mutagen). A
   title or artist alone describes nothing a search would ask for ("Blue Night by Miles Quartet"
   says nothing about the sound), so a file gets captions only if it has a genre or a mood tag:
   ``describe`` sentences plus one "<title> by <artist>, a calm jazz song." sentence naming it.
   Files without genre and mood tags are rejected with the reason.

With a captions file, audio files that no row names are not records (their count is logged);
rows naming a path outside DIR (absolute, ``..``, a URL), a file that does not exist, or a split
other than train/valid/test (``validation``/``val`` mean valid) are rejected. Without a split,
a file's split is ``hashed_split(<relative path>, split_seed)``.

Records are cut like any phase-1 clip source (the pipeline's clip length, every window) unless
``whole_track`` is set, which keeps each file as one item.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from musictext import storage
from musictext.ingest.base import (
    ListContext,
    Source,
    SourceOptions,
    csv_rows,
    hashed_split,
    rejecting,
)
from musictext.ingest.describe import Facets, describe, join_words
from musictext.library import (
    LibraryTrack,
    list_audio,
    read_tags,
    title_from_filename,
)
from musictext.ingest.records import PathAudio, Record, make_record, safe_id
from musictext.rejects import Rejections
from musictext.manifest import relative_path

log = logging.getLogger(__name__)

CAPTIONS_CSV = "captions.csv"
CAPTIONS_JSONL = "captions.jsonl"
SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid", "test": "test"}
BOM = b"\xef\xbb\xbf"
# WAV and AIFF keep ID3 tags in a chunk; mutagen's easy interface has no wrapper for them.


class FolderOptions(SourceOptions):
    # The folder of audio files (local path or bucket URI), with captions.csv/.jsonl or tags.
    dir: str
    # One item per file (the whole file as one clip) instead of the pipeline's clip windows.
    whole_track: bool = False
    licence: str = "user-supplied"


@dataclass
class _Entry:
    """Everything the captions file says about one audio file."""

    captions: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    splits: dict[str, str] = field(default_factory=dict)  # split -> the first item that set it


class FolderSource(Source):
    name = "folder"
    description = "Your own music: a folder of audio files with captions.csv/.jsonl or genre/mood tags."
    phase = 1
    Options = FolderOptions
    published = ()
    licence = "user-supplied"

    def records(self, opts: FolderOptions, ctx: ListContext) -> Iterator[Record]:
        # The folder is the metadata: nothing to fetch.
        return self.parse(opts.dir, opts, ctx.rejections)

    def parse(self, meta_dir: str, opts: FolderOptions, rejections: Rejections) -> Iterator[Record]:
        root = meta_dir.rstrip("/") if meta_dir.rstrip("/") else meta_dir
        if not storage.exists(root):  # else: "no usable records", without saying why
            raise ValueError(f"folder {root!r} does not exist")
        audio = list_audio(root)
        csv_uri, jsonl_uri = storage.join(root, CAPTIONS_CSV), storage.join(root, CAPTIONS_JSONL)
        if storage.exists(csv_uri):
            entries = _read_csv(root, csv_uri, set(audio), rejections)
        elif storage.exists(jsonl_uri):
            entries = _read_jsonl(root, jsonl_uri, set(audio), rejections)
        else:
            yield from _from_tags(root, audio, opts, rejections)
            return
        uncaptioned = len(set(audio) - set(entries))
        if uncaptioned:
            log.info("folder %s: %d audio files have no caption row and are not records", root, uncaptioned)
        for rel, entry in entries.items():
            if len(entry.splits) > 1:
                where = ", ".join(f"{s} ({item})" for s, item in entry.splits.items())
                rejections.add(rel, f"conflicting splits for one file: {where}")
                continue
            if not entry.captions:
                continue  # every row of it was rejected already
            track = read_tags(root, rel)
            split = next(iter(entry.splits), None) or hashed_split(rel, opts.split_seed)
            tags = entry.tags or (track.genres + track.moods)
            with rejecting(rejections):
                yield _record(root, rel, entry.captions, tags, split, track, opts)


def track_id(rel: str) -> str:
    """``folder-<sanitised relative path>-<8 hex of its sha1>`` (two paths that sanitise alike,
    "a b.wav" and "a_b.wav", stay apart)."""
    return f"folder-{safe_id(rel)[:150]}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def _record(root: str, rel: str, captions: list[str], tags: list[str], split: str, track: LibraryTrack,
            opts: FolderOptions) -> Record:
    meta = {"path": rel}
    for key in ("title", "artist", "album"):
        if getattr(track, key):
            meta[key] = getattr(track, key)
    if track.duration_s:
        meta["duration_s"] = track.duration_s
    return make_record(
        rel,
        track_id=track_id(rel),
        source=FolderSource.name,
        split=split,
        captions=list(dict.fromkeys(captions)),
        tags=tags,
        licence=opts.licence,
        audio=PathAudio(root=root, path=rel),
        group=f"file:{rel}",
        clip_seconds=None,
        max_clips=None,
        whole_track=opts.whole_track,
        meta=meta,
    )


# -- captions files ---------------------------------------------------------------------------

def _check_path(root: str, raw: str, audio: set[str]) -> str:
    """The normalised relative path of a captions row; ValueError with the reason otherwise."""
    path = (raw or "").strip()
    if not path:
        raise ValueError("no path")
    try:
        rel = relative_path(path)
    except ValueError as err:
        raise ValueError(f"path outside the folder: {err}") from None
    if rel in audio:
        return rel
    if rel != "." and storage.exists(storage.join(root, rel)):
        raise ValueError(f"{rel!r} is not an audio file of the folder (hidden, or not an audio extension)")
    raise ValueError(f"file {rel!r} does not exist in the folder")


def _check_split(raw) -> str | None:
    value = ("" if raw is None else str(raw)).strip().lower()
    if not value:
        return None
    if value not in SPLIT_NAMES:
        raise ValueError(f"split {raw!r} is not train, valid (validation, val) or test")
    return SPLIT_NAMES[value]


def _split_tags(raw) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [t.strip() for t in raw.split(";") if t.strip()]
    if isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        return [t.strip() for t in raw if t.strip()]
    raise ValueError("tags are neither a list of strings nor a ';'-separated string")


def _add(entries: dict[str, _Entry], rel: str, captions: list[str], tags: list[str], split: str | None,
         item: str) -> None:
    entry = entries.setdefault(rel, _Entry())
    entry.captions.extend(c for c in captions if c not in entry.captions)
    entry.tags.extend(t for t in tags if t not in entry.tags)
    if split:
        entry.splits.setdefault(split, item)


class _Lines:
    """Physical lines of a text for csv.reader (line endings kept, as newline="" does), with the
    character offset and number of the next line, so a row can be traced back to its bytes."""

    def __init__(self, text: str):
        self._lines = io.StringIO(text, newline="")
        self.pos = 0
        self.line = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._lines.readline()
        if not line:
            raise StopIteration
        self.pos += len(line)
        self.line += 1
        return line


def _bad_utf8(text: str, start: int, end: int, offset: int) -> int | None:
    """The file byte offset of the first undecodable byte in ``text[start:end]`` (decoded with
    surrogateescape, so each bad byte is one lone surrogate), or None."""
    match = re.compile("[\udc80-\udcff]").search(text, start, end)
    if match is None:
        return None
    return offset + len(text[: match.start()].encode("utf-8", "surrogateescape"))


def _read_csv(root: str, uri: str, audio: set[str], rejections: Rejections) -> dict[str, _Entry]:
    raw = storage.read_bytes(uri)
    offset = len(BOM) if raw.startswith(BOM) else 0
    text = raw[offset:].decode("utf-8", "surrogateescape")
    lines = _Lines(text)
    reader = csv.reader(lines)
    entries: dict[str, _Entry] = {}
    header = next(reader, None)
    if header is None:
        rejections.add(CAPTIONS_CSV, "empty file")
        return entries
    bad = _bad_utf8(text, 0, lines.pos, offset)
    if bad is not None:
        rejections.add(CAPTIONS_CSV, f"file rejected: header is not valid UTF-8 (byte offset {bad})")
        return entries
    columns = [h.strip().lower() for h in header]
    missing = [c for c in ("path", "caption") if c not in columns]
    if missing:
        rejections.add(CAPTIONS_CSV, f"file rejected: header {header} lacks column(s) {missing}")
        return entries
    end = lines.pos
    for first_line, row in csv_rows(reader, CAPTIONS_CSV, rejections):
        start, end = end, lines.pos  # text[start:end] is this row: csv_rows reads one row a step
        item = f"{CAPTIONS_CSV}:{first_line}"
        if not any(cell.strip() for cell in row):
            continue
        bad = _bad_utf8(text, start, end, offset)
        if bad is not None:
            rejections.add(item, f"row is not valid UTF-8 (byte offset {bad})")
            continue
        fields = dict(zip(columns, row))
        try:
            rel = _check_path(root, fields.get("path", ""), audio)
            caption = (fields.get("caption") or "").strip()
            if not caption:
                raise ValueError("empty caption")
            split = _check_split(fields.get("split"))
            tags = _split_tags(fields.get("tags"))
        except ValueError as err:
            rejections.add(item, str(err))
            continue
        _add(entries, rel, [caption], tags, split, item)
    return entries


def _read_jsonl(root: str, uri: str, audio: set[str], rejections: Rejections) -> dict[str, _Entry]:
    raw = storage.read_bytes(uri)
    entries: dict[str, _Entry] = {}
    pos = 0
    for number, line in enumerate(raw.split(b"\n"), 1):
        line_start, pos = pos, pos + len(line) + 1
        if number == 1 and line.startswith(BOM):
            line, line_start = line[len(BOM):], line_start + len(BOM)
        item = f"{CAPTIONS_JSONL}:{number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            rejections.add(item, f"line is not valid UTF-8 (byte offset {line_start + err.start})")
            continue
        if not text.strip():
            continue
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("line is not a JSON object")
            if not isinstance(data.get("path"), str):
                raise ValueError("no \"path\" string")
            rel = _check_path(root, data["path"], audio)
            captions = data.get("captions")
            captions = [captions] if isinstance(captions, str) else captions
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise ValueError("\"captions\" is not a list of strings")
            captions = [c.strip() for c in captions if c.strip()]
            if not captions:
                raise ValueError("no caption")
            split = _check_split(data.get("split"))
            tags = _split_tags(data.get("tags"))
        except json.JSONDecodeError as err:
            rejections.add(item, f"not valid JSON ({err.msg})")
            continue
        except ValueError as err:
            rejections.add(item, str(err))
            continue
        _add(entries, rel, captions, tags, split, item)
    return entries


# -- captions from the files' own tags --------------------------------------------------------

def _plain(tag: str) -> str:
    """'Jazz' -> 'jazz', 'Hip-Hop' -> 'hip-hop' for use inside a sentence; 'R&B', 'IDM' kept."""
    return tag.lower() if tag.istitle() and all(w.replace("-", "").isalpha() for w in tag.split()) else tag


def named_sentence(title: str, artist: str, facets: Facets) -> str:
    """'Blue Night by Miles Quartet, a calm, mellow jazz song.'"""
    head = " ".join(x for x in (", ".join(facets.mood[:3]), join_words(facets.genre[:2])) if x)
    kind = ("an " if head[:1].lower() in "aeiou" else "a ") + f"{head} song"
    name = f"{title} by {artist}" if artist else title
    return f"{name}, {kind}."


def _from_tags(root: str, audio: list[str], opts: FolderOptions, rejections: Rejections) -> Iterator[Record]:
    for rel in audio:
        track = read_tags(root, rel)
        titled = bool(track.title)  # a real title tag (not a file name)
        if not track.title:
            artist, title = title_from_filename(rel)
            if artist:  # "Artist - Title.ext" names the piece; "a001.wav" does not
                track.artist, track.title, titled = track.artist or artist, title, True
        facets = Facets(genre=[_plain(g) for g in track.genres], mood=[_plain(m) for m in track.moods])
        if facets.empty():
            rejections.add(rel, "no genre or mood tags to describe it (a title or artist alone is no "
                                "description of the music), and no captions.csv/captions.jsonl")
            continue
        tid = track_id(rel)
        captions = describe(facets, tid, 2)
        if titled:
            captions.append(named_sentence(track.title, track.artist, facets))
        split = hashed_split(rel, opts.split_seed)
        with rejecting(rejections):
            yield _record(root, rel, captions, track.genres + track.moods, split, track, opts)
