"""The ``folder`` source: a user's own music folder with captions.csv, captions.jsonl or tags."""

from __future__ import annotations

import logging
import pathlib
import shutil
import uuid

import fsspec
import pytest

from musictext.ingest.base import ListContext, hashed_split
from musictext.ingest.records import PathAudio
from musictext.ingest.sources.folder import FolderSource, track_id
from tests.datasets import build, check_expected, parse_source
from tests.datasets.folder import make_fixture, make_jsonl_fixture, make_tags_fixture, write_track


def _parse(meta_dir: str, **options):
    return parse_source(FolderSource, meta_dir, **({"dir": meta_dir} | options))


@pytest.fixture(scope="module")
def csv_fx(tmp_path_factory):
    return build(tmp_path_factory, make_fixture)


@pytest.fixture(scope="module")
def jsonl_fx(tmp_path_factory):
    return build(tmp_path_factory, make_jsonl_fixture)


@pytest.fixture(scope="module")
def tags_fx(tmp_path_factory):
    return build(tmp_path_factory, make_tags_fixture)


def _parse_checked(made):
    """The library of a fixture parsed and checked against its ``expected``; (records, rejected, ids)."""
    records, rejected = _parse(str(made.root / "library"))
    check_expected((records, rejected), made.info["expected"])  # records, rejections, each record's split
    return records, rejected, made.info["expected"]["ids"]


# -- captions.csv -----------------------------------------------------------------------------

def test_csv_records(csv_fx):
    lib = str(csv_fx.root / "library")
    records, _, ids = _parse_checked(csv_fx)

    blue = records[ids["blue"]]
    assert blue.track_id == "folder-Miles_Quartet_-_Blue_Night.flac-" + track_id("Miles Quartet - Blue Night.flac")[-8:]
    # Two rows of one path: two captions, the second with a quoted line break and quotes.
    assert blue.captions == ["A slow, smoky jazz ballad with brushed drums.",
                             'Late-night piano trio, "quiet" and intimate,\nwith a walking bass line.']
    assert blue.tags == ["jazz", "ballad", "calm", "piano trio"]  # ";"-separated, trimmed, merged
    assert blue.split == "train"
    assert blue.audio == PathAudio(root=lib, path="Miles Quartet - Blue Night.flac")
    assert blue.group == "file:Miles Quartet - Blue Night.flac"
    assert blue.licence == "user-supplied"
    assert blue.source == "folder"
    assert (blue.start_s, blue.end_s, blue.clip_seconds, blue.max_clips, blue.whole_track) == (
        None, None, None, None, False)
    assert blue.meta == {"path": "Miles Quartet - Blue Night.flac", "title": "Blue Night", "artist": "Miles Quartet",
                         "album": "Night Sessions", "duration_s": 7.0}

    engine = records[ids["engine"]]
    assert engine.split == "valid"  # "validation"
    assert engine.captions == ["Driving guitar rock with pounding drums."]  # its Latin-1 row was rejected
    assert engine.tags == ["rock", "guitar"]
    assert engine.meta["artist"] == "Thunder Road Band" and engine.meta["duration_s"] == pytest.approx(6.0, abs=0.1)
    assert records[ids["rain"]].split == "valid"  # "val"
    # No tags column value: the file's own genre/mood tags (read from the WAV's ID3 chunk).
    assert records[ids["rain"]].tags == ["Ambient", "peaceful"]
    assert records[ids["rain"]].meta["title"] == "Rain Study"

    cafe = records[ids["cafe"]]
    assert cafe.track_id == track_id("sub dir/café.flac")
    assert cafe.track_id.startswith("folder-sub_dir_caf_.flac-")
    assert cafe.split == hashed_split("sub dir/café.flac", 0)  # empty split cell
    assert cafe.audio.path == "sub dir/café.flac"

    untagged = records[ids["untagged"]]
    assert untagged.audio.path == "notes/untagged.wav"  # "./notes/untagged.wav" normalised
    assert untagged.group == "file:notes/untagged.wav"
    assert untagged.split == "test"  # "TEST"
    assert untagged.captions == ["A lone cello playing a sad descending line."]  # bad-split and blank rows gone
    assert untagged.meta == {"path": "notes/untagged.wav", "duration_s": 8.0}

    # A dangling symlink is listed (the folder has it); its fetch is what fails.
    assert records[ids["gone"]].audio == PathAudio(root=lib, path="moved/gone.flac")
    assert records[ids["gone"]].meta == {"path": "moved/gone.flac"}


def test_csv_rejections_name_rows_and_bytes(csv_fx):
    root, fx = csv_fx
    _, rejected = _parse(str(root / "library"))
    raw = (root / "library" / "captions.csv").read_bytes()
    # The reported offset is the real position of the Latin-1 byte in the file (BOM included).
    assert raw[fx["expected"]["latin1_byte"]] == 0xE9
    assert rejected[fx["expected"]["items"]["latin1"]] == f"row is not valid UTF-8 (byte offset {raw.index(b'caf' + bytes([0xE9])) + 3})"
    # Line numbers count physical lines: the quoted line break pushes later rows down by one.
    assert fx["expected"]["items"]["engine"] == "captions.csv:5"
    assert rejected["captions.csv:10"].startswith("path outside the folder: path '../outside.wav' leaves")
    assert "absolute" in rejected["captions.csv:12"]
    assert "URL" in rejected["captions.csv:13"]
    assert rejected["captions.csv:14"] == "file 'missing.mp3' does not exist in the folder"
    assert "train (captions.csv:19), test (captions.csv:20)" in rejected["conflict.flac"]


def test_csv_file_facts(csv_fx):
    root, _ = csv_fx
    raw = (root / "library" / "captions.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbfpath,caption,split,tags\r\n")  # BOM, CRLF rows
    assert b'intimate,\nwith' in raw  # a bare LF inside a quoted caption


def test_csv_lf_without_bom_reads_the_same(csv_fx, tmp_path):
    root, fx = csv_fx
    lib = root / "library"
    want, _ = _parse(str(lib))
    copy = tmp_path / "lib"
    shutil.copytree(lib, copy, symlinks=True)
    (copy / "captions.csv").write_bytes((lib / "captions.csv").read_bytes()[3:].replace(b"\r\n", b"\n"))
    got, rejected = _parse(str(copy))
    assert {k: r.captions for k, r in got.items()} == {k: r.captions for k, r in want.items()}
    assert {k: r.split for k, r in got.items()} == {k: r.split for k, r in want.items()}
    assert rejected[fx["expected"]["items"]["latin1"]].endswith(f"(byte offset {(copy / 'captions.csv').read_bytes().index(bytes([0xE9]))})")


def test_uncaptioned_files_are_logged_not_records(csv_fx, caplog):
    root, _ = csv_fx
    with caplog.at_level(logging.INFO, logger="musictext.ingest.sources.folder"):
        records, rejected = _parse(str(root / "library"))
    assert "1 audio files have no caption row" in caplog.text
    paths = {r.audio.path for r in records.values()}
    assert "uncaptioned.mp3" not in paths and ".Trash/deleted.wav" not in paths
    assert "uncaptioned.mp3" not in rejected


def _small_folder(tmp_path: pathlib.Path, captions: bytes, name: str = "captions.csv") -> pathlib.Path:
    lib = tmp_path / "lib"
    write_track(lib / "a.flac", 6.0, 220.0, {"title": "A", "genre": "Jazz"})
    (lib / name).write_bytes(captions)
    return lib


def test_csv_without_required_column_rejects_the_file(tmp_path):
    lib = _small_folder(tmp_path, b"file,caption\r\na.flac,Soft jazz.\r\n")
    records, rejected = _parse(str(lib))
    assert records == {}  # no fallback to the tags when the user's captions file is unusable
    assert "lacks column(s) ['path']" in rejected["captions.csv"]


def test_csv_bad_utf8_header_rejects_the_file(tmp_path):
    lib = _small_folder(tmp_path, b"path,capti\xf3n\r\na.flac,Soft jazz.\r\n")
    records, rejected = _parse(str(lib))
    assert records == {}
    assert rejected == {"captions.csv": "file rejected: header is not valid UTF-8 (byte offset 10)"}


def test_csv_header_any_case_and_order_and_no_split_column(tmp_path):
    lib = _small_folder(tmp_path, b"Caption, PATH \nSoft jazz.,a.flac\n")
    records, rejected = _parse(str(lib), split_seed=7)
    (record,) = records.values()
    assert rejected == {}
    assert record.captions == ["Soft jazz."]
    assert record.split == hashed_split("a.flac", 7)
    assert record.tags == ["Jazz"]  # no tags column: the file's genre tag


def test_csv_wins_over_jsonl(tmp_path):
    lib = _small_folder(tmp_path, b"path,caption\na.flac,From the CSV.\n")
    (lib / "captions.jsonl").write_text('{"path": "a.flac", "captions": ["From the JSONL."]}\n')
    records, _ = _parse(str(lib))
    assert [r.captions for r in records.values()] == [["From the CSV."]]


def test_split_seed_changes_hashed_splits(csv_fx):
    root, fx = csv_fx
    rel = "sub dir/café.flac"
    seed = next(s for s in range(1, 200) if hashed_split(rel, s) != hashed_split(rel, 0))
    records, _ = _parse(str(root / "library"), split_seed=seed)
    assert records[fx["expected"]["ids"]["cafe"]].split == hashed_split(rel, seed)
    assert records[fx["expected"]["ids"]["blue"]].split == "train"  # published splits stay


def test_options(csv_fx):
    root, fx = csv_fx
    src = FolderSource()
    with pytest.raises(ValueError, match="dir"):
        src.options({})
    with pytest.raises(ValueError, match="nonsense"):
        src.options({"dir": "x", "nonsense": 1})
    records, _ = _parse(str(root / "library"), whole_track=True, licence="CC-BY-4.0 (mine)")
    blue = records[fx["expected"]["ids"]["blue"]]
    assert blue.whole_track is True and blue.clip_seconds is None and blue.max_clips is None
    assert blue.licence == "CC-BY-4.0 (mine)"


def test_records_reads_the_folder_without_fetching(csv_fx):
    root, fx = csv_fx
    src = FolderSource()
    opts = src.options(fx["options"])
    ctx = ListContext()
    # base.Source.records would fetch published metadata (musictext.ingest.fetch); the folder
    # source reads opts.dir itself.
    records = list(src.records(opts, ctx))
    assert len(records) == fx["expected"]["records"]
    assert {row["item"] for row in ctx.rejections.rows} == set(fx["expected"]["rejected"])
    parsed, _ = _parse(str(root / "library"))
    assert [r.row() for r in records] == [r.row() for r in parsed.values()]


# -- captions.jsonl ---------------------------------------------------------------------------

def test_jsonl(jsonl_fx):
    records, rejected, ids = _parse_checked(jsonl_fx)
    a = records[ids["a"]]
    # Two lines for a.flac: captions merged in order, split from the line that has one.
    assert a.captions == ["Fingerpicked acoustic guitar and soft vocals.", "A gentle folk song.",
                          "Warm, intimate and unplugged."]
    assert a.tags == ["folk", "acoustic"]
    assert a.split == "valid"
    assert a.meta == {"path": "a.flac", "title": "Alpha", "artist": "Band A", "duration_s": 6.0}
    b = records[ids["b"]]
    assert b.captions == ["Loud live rock with a cheering crowd."]  # a CRLF line; its "dev" line rejected
    assert b.tags == ["rock", "live"]  # a ";"-separated string
    assert records[ids["c"]].captions == ["Sparse synth pads."]
    raw = (jsonl_fx.root / "library" / "captions.jsonl").read_bytes()
    assert rejected["captions.jsonl:7"] == f"line is not valid UTF-8 (byte offset {raw.index(bytes([0xFF]))})"
    assert "d.wav" not in {r.audio.path for r in records.values()}


# -- captions from tags -----------------------------------------------------------------------

def test_tags_mode(tags_fx):
    records, rejected, ids = _parse_checked(tags_fx)
    blue = records[ids["blue"]]
    assert blue.captions == ["A calm, mellow jazz track.", "Jazz music. The mood is calm and mellow.",
                             "Blue Night by Miles Quartet, a calm, mellow jazz song."]
    assert blue.tags == ["Jazz", "Calm", "mellow"]
    # WAV: the ID3 chunk's title, genre and mood (no artist: the sentence names the title only).
    rain = records[ids["rain"]]
    assert "Rain Study, a peaceful ambient song." in rain.captions
    assert rain.tags == ["Ambient", "peaceful"]
    # No title tag, but an "Artist - Title" file name.
    bus = records[ids["bus"]]
    assert "Late Bus by Lo Fi Kid, a hip-hop song." in bus.captions
    assert bus.meta["artist"] == "Lo Fi Kid"
    # A mood but no title and a bare file name: describe sentences only, no "a001" sentence.
    a001 = records[ids["a001"]]
    assert sorted(a001.captions) == ["A dark track.", "This is a dark song."]
    assert "title" not in a001.meta
    for record in records.values():
        assert len(record.captions) >= 2
        assert not any(c.strip().lower() in ("blue night", "engine") for c in record.captions)
    assert "a title or artist alone is no description" in rejected["Someone - Only Title.flac"]


# -- bucket URIs ------------------------------------------------------------------------------

def _to_memory(lib: pathlib.Path) -> str:
    fs = fsspec.filesystem("memory")
    base = f"/folder-test-{uuid.uuid4().hex[:8]}"
    for path in lib.rglob("*"):
        if path.is_file():
            fs.pipe(f"{base}/{path.relative_to(lib).as_posix()}", path.read_bytes())
    return f"memory://{base.lstrip('/')}"


@pytest.mark.parametrize("fixture", ["csv_fx", "jsonl_fx", "tags_fx"])
def test_memory_uri_gives_the_same_records(fixture, request):
    root, fx = request.getfixturevalue(fixture)
    lib = root / "library"
    local, local_rejected = _parse(str(lib))
    uri = _to_memory(lib)
    gone = fx["expected"]["ids"].get("gone")  # the dangling symlink is not copied to the bucket
    if gone:
        del local[gone]
        local_rejected[fx["expected"]["items"]["gone"]] = "file 'moved/gone.flac' does not exist in the folder"
    try:
        remote, remote_rejected = _parse(uri)
        assert local_rejected == remote_rejected
        assert set(remote) == set(local)
        for tid, record in remote.items():
            assert record.audio == PathAudio(root=uri, path=local[tid].audio.path)
            want = local[tid].row() | {"audio": record.audio.model_dump()}
            assert record.row() == want
        # records() with a bucket dir works the same
        opts = FolderSource().options({"dir": uri + "/"})
        ctx = ListContext()
        assert len(list(FolderSource().records(opts, ctx))) == len(local)
    finally:
        fsspec.filesystem("memory").rm(uri[len("memory://"):], recursive=True)
