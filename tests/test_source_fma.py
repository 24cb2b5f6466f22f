"""The FMA source parses the published metadata (tracks.csv's two header rows + index-name row,
multi-line quoted HTML, list literals, per-track licences) from the zip or its extracted files."""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile

import pytest

from musictext.ingest.sources.fma import ARCHIVE_SHA1, BASE_URL, FmaSource, genre_names, read_genres
from tests.datasets import check_expected, fixture_options, parse_source, source_fixtures
from tests.datasets.fma import TRAILING_LICENCE, make_fixture

MIRROR = "http://mirror.test"

made, parsed = source_fixtures(make_fixture, FmaSource, MIRROR)


def _parse(meta_dir, **options):
    return parse_source(FmaSource, meta_dir, **options)


def test_records_splits_and_rejections_match_the_fixture(made, parsed):
    # records, splits, rejections; the audio_fail record listed (its download is what fails)
    check_expected(parsed, made.info["expected"])
    records, rejected = parsed
    assert sorted(records) == ["fma-10", "fma-140", "fma-148", "fma-2", "fma-5"]
    # the index-name row (track_id,,,...) is neither a record nor a rejection
    assert not any("track_id" in item for item in rejected)


def test_one_record_in_full(made, parsed):
    _, info = made
    records, _ = parsed
    r = records["fma-2"]
    assert r.source == "fma" and r.split == "train"
    assert len(r.captions) == 2
    assert set(r.captions) <= {"A hip-hop track.", "Hip-hop music.", "This is a hip-hop song."}
    assert r.tags == ["Hip-Hop"]
    assert r.licence == "Attribution-NonCommercial-ShareAlike 3.0 International"
    assert r.audio.kind == "archive" and r.audio.format == "zip"
    assert r.audio.urls == ("http://mirror.test/audio/fma_small.zip",)
    assert r.audio.member == "fma_small/000/000002.mp3"
    assert r.audio.sha1 == info["options"]["archive_sha1"]
    assert r.start_s is None and r.end_s is None
    assert r.group == "fma:2"
    assert (r.clip_seconds, r.max_clips, r.whole_track) == (30.0, 1, False)
    assert r.meta == {"artist": "AWOL", "title": "Food", "album": "AWOL - A Way Of Life",
                      "genre_top": "Hip-Hop", "subset": "small", "duration_s": 168}
    assert records["fma-10"].split == "valid" and records["fma-5"].split == "test"


def test_quoted_fields_span_lines_and_hold_html(made):
    root, _ = made
    text = zipfile.ZipFile(root / "metadata" / "fma_metadata.zip").read("fma_metadata/tracks.csv").decode()
    # the fixture really has records spanning physical lines, with HTML and doubled quotes inside
    assert '<p>A Way Of Life, A Collective of Hip-Hop from the Bronx.</p>\n<p>Members say ""we keep' in text
    assert text.count("\n") > len(list(csv.reader(io.StringIO(text, newline=""))))
    lines = text.splitlines()
    assert lines[0].startswith(",album,album,") and lines[1].startswith(",comments,date_created,")
    assert lines[2] == "track_id" + "," * 52
    # the row after a multi-line bio is read whole: its fields land in the right columns
    records, _ = _parse(root / "metadata", subset="small")
    r5 = records["fma-5"]
    assert r5.meta["title"] == "This World" and r5.meta["duration_s"] == 206 and r5.split == "test"
    assert records["fma-10"].meta["album"] == "Constant Hitmaker"  # its album info has a newline too


def test_licence_is_stripped_per_track(made):
    root, _ = made
    records, _ = _parse(root / "metadata")
    assert TRAILING_LICENCE.endswith("  ")
    assert records["fma-10"].licence == TRAILING_LICENCE.strip()
    assert records["fma-140"].licence == "Attribution-Noncommercial-Share Alike 3.0 United States"


def test_empty_genres_with_tags_is_described_from_the_tags(made):
    root, _ = made
    records, _ = _parse(root / "metadata")
    r = records["fma-140"]
    assert r.tags == ["folk", "acoustic"]
    assert "genre_top" not in r.meta  # empty genre_top
    # "folk" names an FMA genre so it is said as the genre; "acoustic" stays a plain attribute
    assert set(r.captions) <= {"A folk track (acoustic).", "Folk music. It is acoustic.",
                               "This is a folk song, acoustic."}
    assert len(r.captions) == 2


def test_medium_subset_keeps_nested_tracks_and_multi_root_genres(made):
    root, _ = made
    small, _ = _parse(root / "metadata", subset="small")
    medium, rejected = _parse(root / "metadata", subset="medium")
    assert "fma-20" not in small  # set.subset = medium
    assert set(small) < set(medium) and set(medium) - set(small) == {"fma-20"}
    r = medium["fma-20"]
    # genre_top is empty (genres under Folk and Pop); genres_all names top-level genres first
    assert "genre_top" not in r.meta
    assert r.tags == ["Folk", "Pop", "Experimental Pop", "Singer-Songwriter", "indie", "lo-fi"]
    assert any("folk, pop and experimental pop" in c for c in r.captions)
    assert r.audio.urls == (f"{BASE_URL}/fma_medium.zip",)  # no mirror: the published URL
    assert r.audio.member == "fma_medium/000/000020.mp3"
    assert r.audio.sha1 == ARCHIVE_SHA1["medium"] == "c67b69ea232021025fca9231fc1c7c1a063ab50b"
    assert medium["fma-2"].audio.member == "fma_medium/000/000002.mp3"  # small tracks are in medium too
    assert "fma-20" not in rejected


def test_large_and_full_take_three_windows_and_every_track(made):
    root, _ = made
    for subset in ("large", "full"):
        records, _ = _parse(root / "metadata", subset=subset, verify_archive=False)
        assert set(records) == {"fma-2", "fma-5", "fma-10", "fma-20", "fma-140", "fma-148"}
        r = records["fma-148"]
        assert (r.clip_seconds, r.max_clips) == (30.0, 3)
        assert r.audio.member == f"fma_{subset}/000/000148.mp3"
        assert r.audio.sha1 is None


def test_extracted_metadata_gives_the_same_records(made, tmp_path):
    root, info = made
    with zipfile.ZipFile(root / "metadata" / "fma_metadata.zip") as zf:
        zf.extractall(tmp_path / "unzipped")
    assert (tmp_path / "unzipped" / "fma_metadata" / "tracks.csv").exists()
    from_zip, rej_zip = _parse(root / "metadata", **fixture_options(info, MIRROR))
    extracted, rej_dir = _parse(tmp_path / "unzipped", **fixture_options(info, MIRROR))
    assert {k: v.row() for k, v in extracted.items()} == {k: v.row() for k, v in from_zip.items()}
    assert rej_dir == rej_zip


def test_missing_metadata_names_the_published_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="fma_metadata.zip"):
        _parse(tmp_path)
    (tmp_path / "tracks.csv").write_text("x\n")
    with pytest.raises(FileNotFoundError, match="genres.csv"):
        _parse(tmp_path)


def test_genres_table_and_order():
    genres = read_genres(io.StringIO(
        "genre_id,#tracks,parent,title,top_level\n10,13845,0,Pop,10\n17,12706,0,Folk,17\n"
        "76,2731,10,Experimental Pop,10\n103,5432,17,Singer-Songwriter,17\n"))
    assert genres[76] == ("Experimental Pop", 10)
    assert genre_names([76, 17, 999, 10, 76], genres) == ["Folk", "Pop", "Experimental Pop"]


def test_fixture_archive_matches_the_published_layout(made):
    root, info = made
    data = (root / "audio" / "fma_small.zip").read_bytes()
    assert hashlib.sha1(data).hexdigest() == info["options"]["archive_sha1"]
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = zf.namelist()
    assert "fma_small/000/000002.mp3" in names and "fma_small/000/000148.mp3" not in names
    checks = dict(line.split("  ")[::-1] for line in zf.read("fma_small/checksums").decode().splitlines())
    for rel, sha1 in checks.items():
        assert hashlib.sha1(zf.read(f"fma_small/{rel}")).hexdigest() == sha1
    assert len(checks) == 4


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="subset"):
        FmaSource().options({"subset": "tiny"})
    with pytest.raises(ValueError, match="subsett: Extra inputs"):
        FmaSource().options({"subsett": "small"})
