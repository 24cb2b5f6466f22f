"""Song Describer Dataset: parsing the Zenodo layout (tests/datasets/song_describer.py)."""

from __future__ import annotations

import io
import shutil
import zipfile

import pytest
import soundfile as sf
from musictext.ingest.sources.jamendo import JamendoSource
from musictext.ingest.sources.song_describer import SongDescriberSource

from tests.datasets import check_expected, parse_source, source_fixtures
from tests.datasets import jamendo as jamendo_fixture
from tests.datasets import song_describer as fixture

MIRROR = "http://mirror.test"
BASE = f"{MIRROR}/audio"  # the fixture's audio_base_url, "{base}/audio"

made, parsed = source_fixtures(fixture.make_fixture, SongDescriberSource, MIRROR)


def parse(meta: str, **options):
    return parse_source(SongDescriberSource, meta, **{"metadata": meta, "audio_base_url": BASE} | options)


def test_record_values(made, parsed):
    _, fx = made
    records, _ = parsed
    assert len(records) == fx["expected"]["records"] == 4

    r = records["song_describer-214"]
    assert r.source == "song_describer" and r.split == "test"
    # one record per track with all its captions; the multi-line caption keeps its line break and quotes
    assert r.captions == ["Fast, raw punk rock with shouted vocals and distorted guitars.",
                          'A short punk song.\nThe drums are loud and the guitars sound "fuzzy".']
    assert r.audio.kind == "archive" and r.audio.format == "zip"
    assert r.audio.urls == (f"{BASE}/audio.zip",)
    assert r.audio.member == "audio/14/214.2min.mp3"  # path 14/214.mp3 -> the 2-minute excerpt
    assert r.start_s is None and r.end_s is None and r.whole_track is True
    assert r.clip_seconds is None and r.max_clips is None
    assert r.group == "jamendo:214"
    assert r.licence == "CC-BY-SA-4.0 (captions); audio: CC BY-NC-SA 2.0 (Jamendo)"
    assert r.meta == {"duration_s": 124.6, "familiarity": [3, 2], "caption_ids": [101, 102],
                      "valid_caption_ids": [101], "artist_id": 14, "album_id": 31,
                      "licence_url": "http://creativecommons.org/licenses/by-nc-sa/2.0/",
                      "attribution": "Intro chiante by David TMX"}

    reggae = records["song_describer-415600"]
    assert reggae.audio.member == "audio/00/415600.2min.mp3"
    assert reggae.captions == ["Reggae groove with offbeat guitar skanks and a deep bass line",
                               "relaxing reggae, good for summer"]
    assert reggae.licence.endswith("audio: CC BY-SA 3.0 (Jamendo)")
    # no licence block: the dataset's licence string
    assert records["song_describer-1051200"].licence == "CC-BY-SA-4.0 (captions); audio: CC (Jamendo)"
    assert records["song_describer-1408979"].meta["duration_s"] == 180.9


def test_splits(made, parsed):
    splits = {k: r.split for k, r in parsed.records.items()}
    assert splits == {
        "song_describer-214": "test",  # 1 of its 2 captions is validated
        "song_describer-415600": "test",
        "song_describer-1051200": "train",  # is_valid_subset empty = not validated
        "song_describer-1408979": "train",
    }
    assert {s: list(splits.values()).count(s) for s in ("train", "valid", "test")} == made.info["expected"]["splits"]
    held, _ = parse(made.info["options"]["metadata"], valid_fraction=0.999)
    assert {k: r.split for k, r in held.items()} == splits | {
        "song_describer-1051200": "valid", "song_describer-1408979": "valid"}


def test_rejections(made, parsed):
    check_expected(parsed, made.info["expected"])  # records, splits, rejections, audio_fail listed
    got = parsed.rejected
    # line numbers count physical lines: the quoted caption of 102 spans lines 3-4
    assert got["song_describer.csv:6"] == "empty caption (caption_id 104, track 1004034): dropped"


def test_csv_as_published(made):
    root, _ = made
    raw = (root / "metadata" / "song_describer.csv").read_bytes()
    assert raw.startswith(b"caption_id,track_id,caption,is_valid_subset,familiarity,artist_id,album_id,path,duration\n")
    assert b'"A short punk song.\nThe drums are loud and the guitars sound ""fuzzy"".",False' in raw
    assert b",,4,5001,6001,00/1051200.mp3,312.4\n" in raw  # empty is_valid_subset
    assert b"\r" not in raw


def test_shared_group_with_jamendo(parsed, tmp_path):
    jroot = tmp_path / "jamendo"
    jfx = jamendo_fixture.make_fixture(jroot)
    jam, _ = parse_source(JamendoSource, jfx["options"]["metadata"], metadata=jfx["options"]["metadata"])
    sdd, _ = parsed
    assert jam["jamendo-track_0000214"].group == sdd["song_describer-214"].group == "jamendo:214"
    # SDD's tracks come from MTG-Jamendo's split-0 test set: both sources agree
    assert jam["jamendo-track_0000214"].split == sdd["song_describer-214"].split == "test"
    assert {r.group for r in jam.values()} & {r.group for r in sdd.values()} == {"jamendo:214"}


def test_zip_as_published(made, parsed):
    root, fx = made
    with zipfile.ZipFile(root / "audio" / "audio.zip") as zf:
        names = zf.namelist()
        assert names[0] == "audio/"
        assert "audio/79/1408979.2min.mp3" not in names
        for r in parsed.records.values():
            if r.track_id in fx["expected"]["audio_fail"]:
                continue
            audio, sr = sf.read(io.BytesIO(zf.read(r.audio.member)))
            assert sr == 44100 and audio.shape[1] == 2 and 14 < len(audio) / sr < 16
    assert "1408979.2min.mp3" in fx["expected"]["audio_fail"]["song_describer-1408979"]


def test_options_and_defaults(made):
    _, fx = made
    meta = fx["options"]["metadata"]
    flat, _ = parse(meta, zip_member_prefix="")
    assert flat["song_describer-214"].audio.member == "14/214.2min.mp3"
    recs, _ = parse_source(SongDescriberSource, meta, metadata=meta)
    assert recs["song_describer-214"].audio.urls == ("https://zenodo.org/record/10072001/files/audio.zip",)
    pub = {f.name: f for f in SongDescriberSource.published}
    assert pub["song_describer.csv"].url == "https://zenodo.org/record/10072001/files/song_describer.csv"
    assert pub["song_describer.csv"].required and not pub["audio_licenses.txt"].required
    assert SongDescriberSource.phase == 2


def test_bad_values(made, tmp_path):
    root, _ = made
    meta = tmp_path / "meta"
    shutil.copytree(root / "metadata", meta)
    csv_path = meta / "song_describer.csv"
    text = csv_path.read_text()
    text = text.replace("107,415600,\"relaxing reggae, good for summer\",False",
                        "107,415600,\"relaxing reggae, good for summer\",maybe")
    text = text.replace("00/1051200.mp3", "01/1051200.mp3")
    csv_path.write_text(text)
    records, got = parse(str(meta))
    # an unknown is_valid_subset is neither trusted as train nor as test
    assert got["song_describer.csv:10"] == "bad is_valid_subset 'maybe' (want True, False or empty)"
    assert records["song_describer-415600"].captions == ["Reggae groove with offbeat guitar skanks and a deep bass line"]
    assert "does not match track_id 1051200" in got["song_describer-1051200"]
    assert "song_describer-1051200" not in records

    # the MTG-Jamendo rows the data card names fill the tags when present
    (meta / "song_describer.mtg-jamendo.tsv").write_bytes(
        b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n"
        b"track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tgenre---punkrock\tinstrument---voice\r\n")
    records, _ = parse(str(meta))
    assert records["song_describer-214"].tags == ["punkrock", "voice"]

    csv_path.write_text("caption_id,track_id,text\n1,2,hello\n")
    with pytest.raises(ValueError, match="lacks columns"):
        parse(str(meta))
