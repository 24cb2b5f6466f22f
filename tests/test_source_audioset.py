"""AudioSet music subset: segment CSVs + ontology (tests/datasets/audioset.py) parsed into records."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import soundfile as sf

from musictext.ingest.describe import Facets, describe
from musictext.ingest.records import YouTubeAudio
from musictext.ingest.sources.audioset import (
    LICENCE,
    MUSIC,
    AudioSetSource,
    caption_word,
    load_class_labels,
    load_ontology,
)
from musictext.ingest.sources.musiccaps import MusicCapsSource
from musictext.ingest.sources.youtube_options import train_or_valid
from tests.datasets import audioset as fixture
from tests.datasets import check_expected, parse_source, source_fixtures
from tests.datasets import musiccaps as musiccaps_fixture

made, parsed = source_fixtures(fixture.make_fixture, AudioSetSource)  # youtube_url keeps "{base}"


def parse(meta_dir, **options):
    return parse_source(AudioSetSource, meta_dir, **options)


@pytest.fixture(scope="module")
def onto(made):
    root, _ = made
    return load_ontology((root / "metadata" / "ontology.json").read_bytes())


def mid(name: str) -> str:
    return next(m for m, n, *_ in fixture.CLASSES if n == name)


def test_counts_splits_rejections_and_excluded(made, caplog):
    root, info = made
    expected = info["expected"]
    with caplog.at_level(logging.INFO, logger="musictext.ingest.sources.audioset"):
        records, rejected = parse(root / "metadata")
    check_expected((records, rejected), expected)  # records, splits, rejections, audio_fail listed
    assert expected["records"] == 12
    # excluded segments are not music: neither records nor rejections, only counted in the log
    for ytid in fixture.EXCLUDED:
        assert f"audioset-{ytid}" not in records and f"audioset-{ytid}" not in rejected
    summary = [r.getMessage() for r in caplog.records if "excluded as not music" in r.getMessage()]
    assert len(summary) == 1
    assert "12 music segments kept" in summary[0]
    assert len(fixture.EXCLUDED) == 6 and "6 excluded as not music" in summary[0]
    assert "5 rejected" in summary[0] and "/m/0ggq0m" in summary[0]  # the unknown label


def test_bicycle_bell_with_guitar_every_field(parsed):
    records, _ = parsed
    r = records["audioset--1nilez17Dg"]  # eval CSV, ytid starting with "-", fractional start
    assert r.source == "audioset"
    assert r.split == "test"
    assert (r.start_s, r.end_s) == (40.4, 50.4)
    assert r.audio == YouTubeAudio(ytid="-1nilez17Dg")
    assert r.group == "yt:-1nilez17Dg"
    assert r.licence == LICENCE == "CC-BY-4.0 (labels); audio: YouTube"
    assert (r.clip_seconds, r.max_clips, r.whole_track) == (10.0, 1, False)
    # admitted by Guitar; Bicycle bell stays a tag (and, being under Bell < Musical instrument,
    # an instrument of the caption); the bare "Music" label names nothing
    assert r.tags == ["Music", "Guitar", "Bicycle bell"]
    assert r.captions == describe(Facets(instrument=["guitar", "bicycle bell"]), r.track_id, 2)
    assert len(r.captions) == 2 and all("music," not in c.lower() for c in r.captions)
    assert r.meta == {"labels": ["/m/04rlf", "/m/0342h", "/m/0gy1t2s"], "segments_file": "eval_segments.csv"}


def test_multi_parent_rule(onto):
    # every path from a root passes through Music: the label alone makes a segment music
    for name in ("Music", "Guitar", "Electric guitar", "Piano", "Jazz", "Heavy metal", "Happy music",
                 "Christmas music", "Beatboxing", "Blues", "A capella"):
        assert mid(name) in onto.qualifying, name
    # under Music and also under something else (or only under such a label): not alone
    for name in ("Bell", "Bicycle bell", "Church bell", "Cowbell", "Choir", "Chant"):
        assert mid(name) in onto.music and mid(name) not in onto.qualifying, name
    # outside Music
    for name in ("Singing", "Male singing", "Speech", "Dog", "Bicycle", "Alarm"):
        assert mid(name) not in onto.music and mid(name) not in onto.qualifying, name
    # restrictions: abstract and blacklisted classes never qualify (nor appear as tags)
    for name in ("Music genre", "Music mood", "Music role", "Musical concepts", "Song"):
        assert mid(name) in onto.music and mid(name) not in onto.qualifying, name
        assert not onto.usable(mid(name))
    assert onto.restrictions[mid("Musical concepts")] == {"abstract", "blacklist"}
    assert sorted(onto.parents[mid("Bicycle bell")]) == sorted([mid("Bicycle"), mid("Bell"), mid("Alarm")])
    assert MUSIC in onto.ancestors[mid("Bicycle bell")]


def test_ambiguous_or_non_music_labels_alone_do_not_admit(parsed):
    records, rejected = parsed
    for ytid, labels in [("2Wd9TnBvY0s", ["Bicycle bell"]), ("1xQm4aPzT3E", ["Bicycle bell", "Bicycle"]),
                         ("3Kp8RrLe2Hw", ["Cowbell", "Cattle, bovinae"]), ("4Tn5Yz0aCcM", ["Choir", "Singing"]),
                         ("5Rf2Hj7kLmN", ["Church bell"]), ("--PJHxphWEs", ["Speech", "Gush"])]:
        assert f"audioset-{ytid}" not in records and f"audioset-{ytid}" not in rejected, labels
    # Beatboxing's parents (Hip hop music, Vocal music) are both music: it admits alone
    r = records["audioset-6Gh3Jk8lPqR"]
    assert r.tags == ["Beatboxing"] and r.captions == describe(Facets(genre=["beatboxing"]), r.track_id, 2)


def test_blacklisted_and_abstract_labels_are_dropped(parsed):
    records, _ = parsed
    r = records["audioset-7Jk4Lm9nQrS"]
    assert r.meta["labels"] == ["/m/04rlf", "/m/074ft", "/m/06by7", "/m/03lty", "/t/dd00031", "/m/0kpv1t"]
    assert r.tags == ["Music", "Rock music", "Heavy metal", "Happy music"]  # no Song, no Music genre
    # Rock music is an ancestor of Heavy metal: the caption names the specific genre
    assert r.captions == describe(Facets(genre=["heavy metal"], mood=["happy"]), r.track_id, 2)
    assert all("song music" not in c.lower() and "rock" not in c.lower() for c in r.captions)


def test_short_segment_and_specific_labels(parsed):
    records, _ = parsed
    r = records["audioset-0Bc7Gz2kAqY"]
    assert (r.start_s, r.end_s) == (0.0, 9.0)  # not always 10 s
    assert r.tags == ["Music", "Guitar", "Electric guitar", "Piano", "Sad music"]
    assert r.captions == describe(Facets(instrument=["electric guitar", "piano"], mood=["sad"]), r.track_id, 2)
    assert r.split == "train"


def test_non_music_labels_are_tags_not_captions(parsed):
    records, _ = parsed
    r = records["audioset-A0Qr7St2UvW"]
    assert r.tags == ["Music", "Choir", "Male singing", "Speech", "Dog"]
    assert r.captions == describe(Facets(instrument=["choir", "male singing"]), r.track_id, 2)
    assert not any("speech" in c.lower() or "dog" in c.lower() for c in r.captions)
    assert r.split == "valid" == train_or_valid("yt:A0Qr7St2UvW", 0, 0.1)


def test_unknown_label_ignored(parsed):
    records, _ = parsed
    r = records["audioset-E4Yz1Ab6BcC"]
    assert r.meta["labels"] == ["/m/04rlf", "/m/0ggq0m", "/m/064t9"]
    assert r.tags == ["Music", "Pop music"]


def test_splits_eval_is_test_train_is_hashed(parsed):
    records, _ = parsed
    for r in records.values():
        if r.meta["segments_file"] == "eval_segments.csv":
            assert r.split == "test"
        else:
            assert r.split == train_or_valid(r.group, 0, 0.1)
    assert records["audioset-5Y_mT93tkvQ"].split == "valid"


def test_same_video_as_musiccaps_same_group_and_split(tmp_path, parsed):
    records, _ = parsed
    mc_root = tmp_path / "musiccaps"
    musiccaps_fixture.make_fixture(mc_root)
    mc_records = {r.audio.ytid: r for r in parse_source(MusicCapsSource, mc_root / "metadata").records.values()}
    shared = [ytid for _, ytid, *_ in musiccaps_fixture.AUDIOSET_SEGMENTS]
    assert len(shared) == 6
    for ytid in shared:
        a, m = records[f"audioset-{ytid}"], mc_records[ytid]
        assert a.group == m.group == f"yt:{ytid}"
        assert a.split == m.split  # eval <-> test; train/valid drawn the same way by both
        assert a.audio == m.audio
        assert a.meta["labels"] == m.meta["audioset_labels"]
        if ytid == "Ah_aYOGnQ_I":  # AudioSet has the real fractional start, MusicCaps whole seconds
            assert (a.start_s, a.end_s, m.start_s, m.end_s) == (11.1, 21.1, 11.0, 21.0)
        else:
            assert (a.start_s, a.end_s) == (m.start_s, m.end_s)
    assert {records[f"audioset-{y}"].split for y in shared} == {"train", "valid", "test"}


def test_include_unbalanced(made, caplog):
    root, _ = made
    with caplog.at_level(logging.INFO, logger="musictext.ingest.sources.audioset"):
        records, rejected = parse(root / "metadata", include_unbalanced=True)
    assert "13 music segments kept" in caplog.text and "7 excluded as not music" in caplog.text
    assert len(records) == 13
    r = records["audioset-F5Ab2Bc7CdD"]
    assert r.meta["segments_file"] == "unbalanced_train_segments.csv"
    assert r.split == train_or_valid("yt:F5Ab2Bc7CdD", 0, 0.1) == "train"
    assert r.tags == ["Music", "Piano", "Happy music"]
    assert "audioset-G6Bc3Cd8DeE" not in records and "audioset-G6Bc3Cd8DeE" not in rejected
    assert (root / "youtube" / "F5Ab2Bc7CdD.wav").exists()
    assert not (root / "youtube" / "G6Bc3Cd8DeE.wav").exists()


def test_optional_and_required_files(made, tmp_path):
    root, _ = made
    expected, _ = parse(root / "metadata")
    copy = tmp_path / "copy" / "csv"  # any depth
    shutil.copytree(root / "metadata", copy)
    (copy / "class_labels_indices.csv").unlink()  # optional: names come from the ontology
    (copy / "unbalanced_train_segments.csv").unlink()  # optional unless include_unbalanced
    records, _ = parse(tmp_path / "copy")
    assert records == expected
    with pytest.raises(FileNotFoundError, match="unbalanced_train_segments.csv"):
        parse(tmp_path / "copy", include_unbalanced=True)
    (copy / "ontology.json").unlink()
    with pytest.raises(FileNotFoundError, match="ontology.json"):
        parse(tmp_path / "copy")


def test_duplicate_ytid_across_files_rejected(made, tmp_path):
    root, _ = made
    shutil.copytree(root / "metadata", tmp_path / "m")
    balanced = tmp_path / "m" / "balanced_train_segments.csv"
    balanced.write_text(balanced.read_text() + '2unse6chkMU, 30.000, 40.000, "/m/04rlf,/m/06by7"\n')
    records, rejected = parse(tmp_path / "m")
    assert records["audioset-2unse6chkMU"].split == "test"  # the eval row wins
    assert rejected["audioset-2unse6chkMU"] == (
        "duplicate ytid at balanced_train_segments.csv:23 (first at eval_segments.csv:5)")


def test_published_formats_in_the_fixture(made):
    root, _ = made
    text = (root / "metadata" / "balanced_train_segments.csv").read_text()
    lines = text.split("\n")
    assert lines[0].startswith("# Segments csv created ") and lines[1].startswith("# num_ytids=")
    assert lines[2] == "# YTID, start_seconds, end_seconds, positive_labels"
    assert lines[3] == '-0SdAVK79lg, 30.000, 40.000, "/m/0155w"'  # one label, still quoted
    assert "\r" not in text
    labels = (root / "metadata" / "class_labels_indices.csv").read_text().splitlines()
    assert labels[0] == "index,mid,display_name" and '137,/m/04rlf,"Music"' in labels
    assert load_class_labels("\n".join(labels).encode())["/m/01xq0k1"] == "Cattle, bovinae"
    nodes = json.loads((root / "metadata" / "ontology.json").read_text())
    assert set(nodes[0]) == {"id", "name", "description", "citation_uri", "positive_examples",
                             "child_ids", "restrictions"}


def test_caption_word():
    assert caption_word("Pop music", "genre") == "pop"
    assert caption_word("Hip hop music", "genre") == "hip hop"
    assert caption_word("Music for children", "genre") == "children's"
    assert caption_word("Happy music", "mood") == "happy"
    assert caption_word("Keyboard (musical)", "instrument") == "keyboard"
    assert caption_word("Violin, fiddle", "instrument") == "violin"
    assert caption_word("Christmas music", "other") == "Christmas music"
    assert caption_word("UK garage", "genre") == "UK garage"


def test_bad_ontology_is_an_error():
    with pytest.raises(ValueError, match="not JSON"):
        load_ontology(b"{")
    with pytest.raises(ValueError, match="no Music class"):
        load_ontology(json.dumps([{"id": "/m/09x0r", "name": "Speech", "child_ids": []}]).encode())


def test_options_and_published():
    source = AudioSetSource()
    opts = source.options({})
    assert (opts.include_unbalanced, opts.valid_fraction) == (False, 0.1)
    assert opts.video_url("--PJHxphWEs") == "https://www.youtube.com/watch?v=--PJHxphWEs"
    urls = {f.name: (f.url, f.required) for f in source.published}
    assert urls["eval_segments.csv"] == (
        "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/eval_segments.csv", True)
    assert urls["unbalanced_train_segments.csv"][1] is False
    assert urls["ontology.json"][0].endswith("audioset/ontology/master/ontology.json")


def test_fixture_audio_layout(made, parsed):
    root, info = made
    records, _ = parsed
    assert info["options"]["youtube_url"] == "{base}/youtube/{ytid}.wav"
    for r in records.values():
        path = root / "youtube" / f"{r.audio.ytid}.wav"
        if r.track_id in info["expected"]["audio_fail"]:
            assert not path.exists()
        else:
            meta = sf.info(str(path))
            assert (meta.samplerate, meta.channels) == (16000, 1)
            assert abs(meta.duration - max(12.0, r.end_s + 2.0)) < 0.1
