"""Fixtures of the ``folder`` source: a user's own music folder (``root/library``).

Three variants, each ``make_*(root) -> {"options", "expected"}``:

- ``make_fixture``: WAV/FLAC/MP3 files with tags and a ``captions.csv`` (UTF-8 BOM, CRLF
  rows, a caption with a quoted line break and quotes, a path with several rows, a ``;`` tags
  column, ``validation``/``val``/``TEST`` splits, and bad rows: a traversal, an absolute path,
  a URL, a missing file, a bad split, an empty caption, a row of Latin-1 bytes, a file with
  conflicting splits) and a dangling symlink (listed, captioned, its fetch fails);
- ``make_jsonl_fixture``: ``captions.jsonl`` with good, merged and bad lines;
- ``make_tags_fixture``: no captions file; captions from the files' genre/mood tags.

``write_track`` (audio written with soundfile, tags with mutagen) is shared with the
``allmusic`` fixture.
"""

from __future__ import annotations

import csv
import io
import pathlib

import numpy as np
import soundfile as sf

from musictext.ingest.base import hashed_split
from musictext.ingest.sources.folder import track_id

RATE = 16000


def write_track(path: pathlib.Path, seconds: float = 6.0, freq: float = 220.0, tags: dict | None = None) -> None:
    """A mono sine (16 kHz) as WAV, FLAC or MP3 (by suffix), tagged with ``tags`` (mutagen easy
    keys: title, artist, album, genre, mood; a list for several values)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    x = (0.2 * np.sin(2 * np.pi * freq * t) * np.minimum(1.0, 4 * t)).astype("float32")
    fmt = {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3"}[path.suffix.lower()]
    sf.write(str(path), x, RATE, format=fmt)
    if tags:
        _tag(path, tags)


def _tag(path: pathlib.Path, tags: dict) -> None:
    import mutagen
    from mutagen import id3
    from mutagen.flac import FLAC
    from mutagen.wave import WAVE

    def values(v):
        return v if isinstance(v, list) else [v]

    suffix = path.suffix.lower()
    if suffix == ".flac":
        audio = FLAC(str(path))
        for key, value in tags.items():
            audio[key] = values(value)
    elif suffix == ".mp3":
        audio = mutagen.File(str(path), easy=True)
        if audio.tags is None:
            audio.add_tags()
        for key, value in tags.items():
            audio[key] = values(value)
    else:  # WAV: an "id3 " chunk, as taggers write it
        audio = WAVE(str(path))
        audio.add_tags()
        frames = {"title": id3.TIT2, "artist": id3.TPE1, "album": id3.TALB, "genre": id3.TCON, "mood": id3.TMOO}
        for key, value in tags.items():
            audio.tags.add(frames[key](encoding=3, text=values(value)))
    audio.save()


# Tagged tracks of both the captions.csv and the tags-only library: path -> (frequency, tags).
TAGGED = {
    "Miles Quartet - Blue Night.flac": (196.0, {"title": "Blue Night", "artist": "Miles Quartet",
                                                "album": "Night Sessions", "genre": "Jazz",
                                                "mood": ["Calm", "mellow"]}),
    "rock/engine.mp3": (330.0, {"title": "Engine", "artist": "Thunder Road Band", "genre": "Rock"}),
    "field/rain.wav": (262.0, {"title": "Rain Study", "genre": "Ambient", "mood": "peaceful"}),
}


def _write_tagged(lib: pathlib.Path, seconds: tuple[float, float, float]) -> None:
    for (rel, (freq, tags)), secs in zip(TAGGED.items(), seconds, strict=True):
        write_track(lib / rel, secs, freq, tags)


def _library_files(lib: pathlib.Path) -> None:
    _write_tagged(lib, (7.0, 6.0, 6.5))
    write_track(lib / "sub dir" / "café.flac", 6.0, 294.0)
    write_track(lib / "notes" / "untagged.wav", 8.0, 147.0)
    write_track(lib / "conflict.flac", 6.0, 440.0)
    write_track(lib / "uncaptioned.mp3", 6.0, 392.0, {"title": "Not Listed", "genre": "Pop"})
    write_track(lib / ".Trash" / "deleted.wav", 6.0, 100.0)  # hidden: not an audio file of the folder
    # A file moved to another disk: the folder still lists it (a dangling symlink); its fetch fails.
    (lib / "moved").mkdir()
    (lib / "moved" / "gone.flac").symlink_to("../../elsewhere/gone.flac")
    (lib / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def _csv_row(fields: list[str]) -> bytes:
    buf = io.StringIO(newline="")
    csv.writer(buf).writerow(fields)  # QUOTE_MINIMAL, "\r\n" after the row (like Excel)
    return buf.getvalue().encode("utf-8")


def make_fixture(root: pathlib.Path) -> dict:
    """``root/library`` with captions.csv; see the module docstring."""
    lib = root / "library"
    _library_files(lib)
    rows: list[tuple[str | None, bytes]] = [  # (what becomes of the row, its bytes)
        (None, _csv_row(["path", "caption", "split", "tags"])),
        ("blue", _csv_row(["Miles Quartet - Blue Night.flac", "A slow, smoky jazz ballad with brushed drums.",
                           "train", "jazz;ballad; calm"])),
        ("blue", _csv_row(["Miles Quartet - Blue Night.flac",
                           'Late-night piano trio, "quiet" and intimate,\nwith a walking bass line.', "train",
                           "piano trio;"])),
        ("engine", _csv_row(["rock/engine.mp3", "Driving guitar rock with pounding drums.", "validation",
                             "rock;guitar"])),
        ("rain", _csv_row(["field/rain.wav", "Rain on a window and a distant piano lullaby.", "val", ""])),
        ("cafe", _csv_row(["sub dir/café.flac", "Warm acoustic guitar and a hummed melody.", "", "folk"])),
        ("untagged", _csv_row(["./notes/untagged.wav", "A lone cello playing a sad descending line.", "TEST",
                               "cello"])),
        ("gone", _csv_row(["moved/gone.flac", "A track whose file was moved away.", "train", ""])),
        ("traversal", _csv_row(["../outside.wav", "Should never be read.", "train", ""])),
        ("traversal2", _csv_row(["rock/../../etc/outside.wav", "Neither should this.", "train", ""])),
        ("absolute", _csv_row(["/etc/hosts.wav", "An absolute path.", "train", ""])),
        ("url", _csv_row(["https://example.com/song.mp3", "A URL.", "train", ""])),
        ("missing", _csv_row(["missing.mp3", "This file is not in the folder.", "train", ""])),
        ("not_audio", _csv_row(["cover.jpg", "A picture.", "train", ""])),
        ("bad_split", _csv_row(["notes/untagged.wav", "A second caption with a bad split.", "holdout", ""])),
        ("blank", _csv_row(["notes/untagged.wav", "   ", "test", ""])),
        ("latin1", "rock/engine.mp3,Guitars with a caf\xe9 feel,train,\r\n".encode("latin-1")),
        ("conflict", _csv_row(["conflict.flac", "Sine tone, train.", "train", ""])),
        ("conflict", _csv_row(["conflict.flac", "Sine tone, test.", "test", ""])),
    ]
    data = b"\xef\xbb\xbf" + b"".join(r for _, r in rows)
    (lib / "captions.csv").write_bytes(data)

    line, lines, offsets, offset = 1, {}, {}, 3
    for what, raw in rows:
        lines.setdefault(what, line)
        offsets.setdefault(what, offset)
        line += raw.count(b"\n")
        offset += len(raw)
    latin1_byte = offsets["latin1"] + rows[[w for w, _ in rows].index("latin1")][1].index(b"\xe9")

    def item(what: str) -> str:
        return f"captions.csv:{lines[what]}"

    ids = {k: track_id(p) for k, p in (("blue", "Miles Quartet - Blue Night.flac"), ("engine", "rock/engine.mp3"),
                                        ("rain", "field/rain.wav"), ("cafe", "sub dir/café.flac"),
                                        ("untagged", "notes/untagged.wav"), ("gone", "moved/gone.flac"))}
    return {
        "options": {"dir": str(lib)},
        "expected": {
            "records": 6,
            "ids": ids,
            "items": {k: item(k) for k in lines if k},
            "latin1_byte": latin1_byte,
            "rejected": {
                item("traversal"): "path outside the folder",
                item("traversal2"): "path outside the folder",
                item("absolute"): "path outside the folder",
                item("url"): "path outside the folder",
                item("missing"): "does not exist",
                item("not_audio"): "not an audio file",
                item("bad_split"): "split 'holdout'",
                item("blank"): "empty caption",
                item("latin1"): f"byte offset {latin1_byte}",
                "conflict.flac": "conflicting splits",
            },
            "splits": {ids["blue"]: "train", ids["engine"]: "valid", ids["rain"]: "valid",
                       ids["cafe"]: hashed_split("sub dir/café.flac", 0), ids["untagged"]: "test",
                       ids["gone"]: "train"},
            "uncaptioned": 1,  # uncaptioned.mp3 (the hidden .Trash file is not an audio file of the folder)
            "audio_fail": {ids["gone"]: "not found"},  # the dangling symlink
        },
    }


def make_jsonl_fixture(root: pathlib.Path) -> dict:
    """``root/library`` with captions.jsonl (no captions.csv)."""
    lib = root / "library"
    write_track(lib / "a.flac", 6.0, 220.0, {"title": "Alpha", "artist": "Band A", "genre": "Folk"})
    write_track(lib / "b.mp3", 6.0, 247.0)
    write_track(lib / "c.wav", 6.0, 277.0)
    write_track(lib / "d.wav", 6.0, 311.0)  # no line names it
    lines = [
        b'{"path": "a.flac", "captions": ["Fingerpicked acoustic guitar and soft vocals.", '
        b'"A gentle folk song."], "split": "validation", "tags": ["folk", "acoustic"]}',
        b'{"path": "b.mp3", "captions": ["Loud live rock with a cheering crowd."], "tags": "rock; live"}\r',
        b"this is not json",
        b'{"path": "../escape.wav", "captions": ["outside"]}',
        b'{"path": "a.flac", "captions": ["Warm, intimate and unplugged."]}',
        b'{"path": "c.wav", "captions": []}',
        b'{"path": "c.wav", "captions": ["bad \xff byte"]}',
        b'["a", "list"]',
        b'{"path": "b.mp3", "captions": ["x"], "split": "dev"}',
        b'{"path": "c.wav", "captions": ["Sparse synth pads."], "split": "val"}',
        b"",
    ]
    data = b"\xef\xbb\xbf" + b"\n".join(lines)
    (lib / "captions.jsonl").write_bytes(data)
    bad_byte = data.index(b"\xff")
    ids = {"a": track_id("a.flac"), "b": track_id("b.mp3"), "c": track_id("c.wav")}
    return {
        "options": {"dir": str(lib)},
        "expected": {
            "records": 3,
            "ids": ids,
            "rejected": {
                "captions.jsonl:3": "not valid JSON",
                "captions.jsonl:4": "path outside the folder",
                "captions.jsonl:6": "no caption",
                "captions.jsonl:7": f"byte offset {bad_byte}",
                "captions.jsonl:8": "not a JSON object",
                "captions.jsonl:9": "split 'dev'",
            },
            "splits": {ids["a"]: "valid", ids["b"]: hashed_split("b.mp3", 0), ids["c"]: "valid"},
            "audio_fail": {},
        },
    }


def make_tags_fixture(root: pathlib.Path) -> dict:
    """``root/library`` with no captions file: captions from the files' tags."""
    lib = root / "library"
    _write_tagged(lib, (6.0, 6.0, 6.0))
    write_track(lib / "Lo Fi Kid - Late Bus.mp3", 6.0, 175.0, {"genre": "Hip-Hop"})  # no title tag
    write_track(lib / "a001.flac", 6.0, 185.0, {"mood": "dark"})  # no title, no "Artist - Title" name
    write_track(lib / "Someone - Only Title.flac", 6.0, 208.0, {"title": "Only Title", "artist": "Someone"})
    write_track(lib / "notes" / "untagged.wav", 6.0, 147.0)
    (lib / "broken.mp3").write_bytes(b"\x00garbage, not an mp3" * 10)
    paths = [*TAGGED, "Lo Fi Kid - Late Bus.mp3", "a001.flac"]
    ids = {k: track_id(p) for k, p in zip(("blue", "engine", "rain", "bus", "a001"), paths, strict=True)}
    return {
        "options": {"dir": str(lib)},
        "expected": {
            "records": 5,
            "ids": ids,
            "rejected": {
                "Someone - Only Title.flac": "no genre or mood tags",
                "notes/untagged.wav": "no genre or mood tags",
                "broken.mp3": "no genre or mood tags",
            },
            "splits": {track_id(p): hashed_split(p, 0) for p in paths},
            "audio_fail": {},
        },
    }
