"""The msd_lastfm source: Last.fm tags (JSON files, zips or lastfm_tags.db) + the user's library."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import soundfile as sf
from musictext.ingest.base import hashed_split
from musictext.ingest.sources.msd_lastfm import (
    LICENCE,
    VALID_FRACTIONS,
    MsdLastfmSource,
    facets_of,
    usable_tags,
)

from tests.datasets import check_expected, parse_source, source_fixtures
from tests.datasets import msd_lastfm as fixture

made, parsed = source_fixtures(fixture.make_fixture, MsdLastfmSource)


def parse(options: dict):
    return parse_source(MsdLastfmSource, options["metadata"], **options)


def test_fixture_is_in_the_published_layout(made):
    root, _ = made
    path = root / "metadata/lastfm_test/B/I/J/TRBIJYB128F14AE326.json"  # 3rd-5th characters
    obj = json.loads(path.read_text())
    assert set(obj) == {"artist", "timestamp", "similars", "tags", "track_id", "title"}
    casual = json.loads((root / "metadata/lastfm_train/A/A/A/TRAAAAW128F429D538.json").read_text())
    assert casual["tags"][0] == ["Hip-Hop", "100"]  # weights are strings
    assert isinstance(casual["similars"][0][1], float)  # similarity values are numbers
    assert obj["similars"] == []


def test_expected_counts_match(made, parsed):
    check_expected(parsed, made.info["expected"])  # records, rejections, records per split, audio_fail listed


def test_tagged_track_record(made, parsed):
    root, _ = made
    records, _ = parsed
    r = records["msd_lastfm-TRAAAAW128F429D538"]
    # "Hip-Hop" (100) and "hip hop" (60) merge at 100; "seen live", "favorites" and the artist's
    # own name ("Casual") are junk; "guitar" (5) is under min_tag_weight=10.
    assert r.tags == ["hip hop", "underground hip hop", "mellow", "80s"]
    assert r.meta["tags"] == [["hip hop", 100], ["underground hip hop", 50], ["mellow", 30], ["80s", 20]]
    assert "A mellow hip hop and underground hip hop track (from the 80s)." in r.captions
    assert "Hip hop and underground hip hop music. The mood is mellow. It is from the 80s." in r.captions
    assert len(r.captions) == 3 and all("seen live" not in c and "Casual" not in c for c in r.captions)
    assert r.audio.kind == "path" and r.audio.root == str(root / "library")
    assert r.audio.path == "Casual/Fear Itself/01 I Didn't Mean To.flac"
    assert r.whole_track is True and r.start_s is None and r.end_s is None and r.clip_seconds is None
    assert r.group == "msd:TRAAAAW128F429D538"
    assert r.licence == LICENCE
    assert r.meta["artist"] == "Casual" and r.meta["title"] == "I Didn't Mean To"
    assert r.meta["duration_s"] == pytest.approx(8.0, abs=0.1)
    assert r.split == hashed_split("msd:TRAAAAW128F429D538", 0, VALID_FRACTIONS)


def test_weight_threshold_and_facets(parsed):
    records, _ = parsed
    box = records["msd_lastfm-TRAAABD128F429CF47"]
    # "male vocalists" has weight "10" exactly: kept (>=), renamed; "Favorite" is junk.
    assert box.tags == ["60s", "soul", "oldies", "piano", "male vocals"]
    assert "A soul and oldies track with piano and male vocals (from the 60s)." in box.captions
    jazz = records["msd_lastfm-TRBIJYB128F14AE326"]
    assert jazz.split == "test"  # lastfm_test is the published test set
    assert "The sound of saxophone in a jazz and smooth jazz piece, night." in jazz.captions
    # The library file is titled "Night Train"; Last.fm says "Night Train (Remastered 2009)".
    assert jazz.audio.path == "Lumen Trio/Night Train.flac"


def test_min_tag_weight_option(made):
    _, fx = made
    records, _ = parse(fx["options"] | {"min_tag_weight": 50})
    assert records["msd_lastfm-TRAAABD128F429CF47"].tags == ["60s", "soul", "oldies"]
    assert records["msd_lastfm-TRAAAPK128E0786D96"].tags == ["ambient", "chillout"]
    assert records["msd_lastfm-TRAAAAW128F429D538"].tags == ["hip hop", "underground hip hop"]


def test_rejections_name_the_item_and_reason(parsed):
    _, rejected = parsed
    assert rejected["TRAAADZ128F9348C2E"].startswith("no usable tag")  # tags: []
    assert rejected["TRAAAEF128F4273421"].startswith("no usable tag")  # only junk
    assert rejected["lastfm_train/A/A/A/TRAAAFD128F92F423A.json"].startswith("not valid JSON")
    assert rejected["TRAAAMO128F1481E7F"] == (
        "no audio in the library for Jeff And Sheri Easter – The Moon And I (Ordinary Day Album Version)")


def test_library_matches_by_file_name_and_keeps_corrupt_files(made, parsed):
    root, _ = made
    records, _ = parsed
    assert records["msd_lastfm-TRAAAPK128E0786D96"].audio.path == "Unsorted/Blue Harbour - Tidewater.mp3"
    broken = records["msd_lastfm-TRAAARJ128F9320760"]
    assert broken.audio.path == fixture.CORRUPT and "duration_s" not in broken.meta
    with pytest.raises(sf.LibsndfileError):  # its download/decoding must fail later (audio_fail)
        sf.read(root / "library" / fixture.CORRUPT)
    gone = records["msd_lastfm-TRAAAUC128F428716F"]  # a dangling symlink: its fetch finds no file
    assert gone.audio.path == fixture.DANGLING and not (root / "library" / fixture.DANGLING).exists()


def test_unit_tag_cleaning():
    kept = usable_tags([["Rock", "90"], ["rock", "95"], ["my favourite songs", "80"], ["5 stars", "70"],
                        ["Female Vocalists", "60"], ["1980s", "50"], ["x", "oops"], "bad", ["The Band", "40"]],
                       10, artist="The Band")
    assert kept == [("rock", 95), ("female vocals", 60), ("1980s", 50)]
    f = facets_of(["rock", "female vocals", "1980s", "sad", "swedish pop", "bay area"])
    assert (f.genre, f.mood, f.instrument, f.other) == (
        ["rock", "swedish pop"], ["sad"], ["female vocals"], ["from the 80s", "bay area"])


def test_published_zips_are_read_without_unpacking(made, parsed, tmp_path):
    root, fx = made
    meta = tmp_path / "zipped"
    meta.mkdir()
    for name in ("lastfm_train", "lastfm_test"):
        with zipfile.ZipFile(meta / f"{name}.zip", "w") as zf:
            for path in sorted((root / "metadata" / name).rglob("*.json")):
                zf.write(path, str(path.relative_to(root / "metadata")))
    records, rejected = parse(fx["options"] | {"metadata": str(meta)})
    expected_records, _ = parsed
    assert {k: v.row() for k, v in records.items()} == {k: v.row() for k, v in expected_records.items()}
    assert rejected["lastfm_train.zip:lastfm_train/A/A/A/TRAAAFD128F92F423A.json"].startswith("not valid JSON")


def test_subset_duplicates_are_dropped(made, tmp_path):
    root, fx = made
    meta = tmp_path / "meta"
    shutil.copytree(root / "metadata", meta)
    # lastfm_subset repeats a test track: the test copy wins, no duplicate record.
    dup = meta / "lastfm_subset/B/I/J/TRBIJYB128F14AE326.json"
    dup.parent.mkdir(parents=True)
    shutil.copy(meta / "lastfm_test/B/I/J/TRBIJYB128F14AE326.json", dup)
    # A subset-only track (moved out of train) gets a hashed split over train/valid/test.
    moved = meta / "lastfm_subset/A/A/A/TRAAAPK128E0786D96.json"
    moved.parent.mkdir(parents=True)
    shutil.move(meta / "lastfm_train/A/A/A/TRAAAPK128E0786D96.json", moved)
    records, _ = parse(fx["options"] | {"metadata": str(meta)})
    assert len(records) == fx["expected"]["records"]
    assert records["msd_lastfm-TRBIJYB128F14AE326"].split == "test"
    r = records["msd_lastfm-TRAAAPK128E0786D96"]
    assert r.meta["lastfm"] == "lastfm_subset"
    assert r.split == hashed_split("msd:TRAAAPK128E0786D96", 0)


def test_sqlite_form(tmp_path, parsed):
    fx = fixture.make_db_fixture(tmp_path)
    records, rejected = parse(fx["options"])
    check_expected((records, rejected), fx["expected"])  # records, rejections, audio_fail listed
    json_records, _ = parsed
    # ROWID joins: tags land on the right tracks (the fixture inserts tags and tracks in
    # different orders), weights come from tid_tag.val.
    for track_id, r in records.items():
        assert r.tags == json_records[track_id].tags
        assert r.meta["tags"] == json_records[track_id].meta["tags"]
        assert r.meta["lastfm"] == "lastfm_tags.db"
        assert r.split == hashed_split(r.group, 0)  # the database has no published split
    assert records["msd_lastfm-TRAAAAW128F429D538"].meta["title"] == "I Didn't Mean To"


def test_missing_metadata(tmp_path, made):
    _, fx = made
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="lastfm_tags.db"):
        parse(fx["options"] | {"metadata": str(tmp_path / "empty")})
    db_only = tmp_path / "db_only"
    db_only.mkdir()
    shutil.copy(fixture.make_db_fixture(tmp_path / "db")["options"]["metadata"] + "/lastfm_tags.db", db_only)
    with pytest.raises(FileNotFoundError, match="unique_tracks.txt"):
        parse(fx["options"] | {"metadata": str(db_only)})


def test_library_option_is_required(made):
    with pytest.raises(ValueError, match="library"):
        MsdLastfmSource().options({"metadata": "x"})
    with pytest.raises(ValueError, match="min_tag_weight"):
        MsdLastfmSource().options({"library": "x", "min_tag_weight": 101})


def test_source_attributes():
    s = MsdLastfmSource()
    assert s.name == "msd_lastfm" and s.phase == 2
    urls = {f.name: f.url for f in s.published}
    assert urls["lastfm_train.zip"] == "http://millionsongdataset.com/sites/default/files/lastfm/lastfm_train.zip"
    assert urls["unique_tracks.txt"].endswith("/AdditionalFiles/unique_tracks.txt")
    assert Path(fixture.__file__).name == "msd_lastfm.py"
