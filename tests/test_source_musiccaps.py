"""MusicCaps: the published CSV (tests/datasets/musiccaps.py) parsed into records."""

from __future__ import annotations

import math

import pytest
import soundfile as sf

from musictext.ingest.base import hashed_split
from musictext.ingest.describe import describe
from musictext.ingest.records import YouTubeAudio
from musictext.ingest.sources.musiccaps import LICENCE, MusicCapsSource, aspect_facets
from musictext.ingest.sources.youtube_options import YouTubeOptions, train_or_valid
from tests.datasets import check_expected, parse_source, source_fixtures
from tests.datasets import musiccaps as fixture

made, parsed = source_fixtures(fixture.make_fixture, MusicCapsSource)  # youtube_url keeps "{base}"


def parse(meta_dir, **options):
    return parse_source(MusicCapsSource, meta_dir, **options)


def test_counts_splits_and_rejections_match_the_fixture(made, parsed):
    # records, splits, rejections, and the audio_fail records listed (only their download fails)
    check_expected(parsed, made.info["expected"])
    assert made.info["expected"]["records"] == 6
    assert parsed.rejected["musiccaps-Kmgo00avvEw"] == "end_s 40 is not after start_s 40"


def test_first_row_every_field(parsed):
    records, _ = parsed
    r = records["musiccaps--0Gj8-vB1q4"]  # a ytid starting with "-"
    assert r.source == "musiccaps"
    assert r.split == "test"  # is_audioset_eval=True
    assert r.captions[0] == fixture.CAPTION_FIRST
    assert r.tags == ["low quality", "sustained strings melody", "soft female vocal",
                      "mellow piano melody", "sad", "soulful", "ballad"]
    assert r.audio == YouTubeAudio(ytid="-0Gj8-vB1q4")
    assert (r.start_s, r.end_s) == (30.0, 40.0)
    assert r.group == "yt:-0Gj8-vB1q4"
    assert r.licence == LICENCE == "CC-BY-SA-4.0 (captions); audio: YouTube"
    assert (r.clip_seconds, r.max_clips, r.whole_track) == (10.0, 1, False)
    # several AudioSet labels: one quoted field, split on commas
    assert r.meta == {"author_id": 4, "audioset_labels": ["/m/0140xf", "/m/02cjck", "/m/04rlf"],
                      "is_balanced_subset": False, "is_audioset_eval": True}


def test_second_caption_is_one_describe_sentence_from_the_aspects(parsed):
    records, _ = parsed
    r = records["musiccaps--0Gj8-vB1q4"]
    assert len(r.captions) == 2
    facets = aspect_facets(r.tags)
    assert facets.genre == ["ballad"]
    assert facets.mood == ["sad", "soulful"]
    assert facets.instrument == ["sustained strings melody", "soft female vocal", "mellow piano melody"]
    assert facets.other == ["low quality"]
    assert r.captions[1] == describe(facets, r.track_id, 1)[0]
    assert "ballad" in r.captions[1].lower() and "sad" in r.captions[1]
    # a raw tag list is never a caption
    assert all(c != ", ".join(r.tags) and not c.startswith("[") for c in r.captions)


def test_aspect_facets_sorts_phrases():
    f = aspect_facets(["medium tempo", "no voice", "acoustic guitar", "hip hop", "melancholic", "live"])
    assert f.tempo == ["medium tempo"]
    assert f.instrument == ["acoustic guitar"]
    assert f.genre == ["hip hop"]
    assert f.mood == ["melancholic"]
    assert f.other == ["no voice", "live"]  # a negation names no instrument


def test_aspect_caption_can_be_switched_off(made):
    root, _ = made
    records, _ = parse(root / "metadata", aspect_caption=False)
    assert records["musiccaps--0Gj8-vB1q4"].captions == [fixture.CAPTION_FIRST]
    assert all(len(r.captions) == 1 for r in records.values())


def test_bare_single_label_and_train_row(parsed):
    records, _ = parsed
    r = records["musiccaps--0SdAVK79lg"]
    assert r.meta["audioset_labels"] == ["/m/0155w"]
    assert r.split == "train"
    assert r.captions[0] == fixture.CAPTION_GUITAR
    assert "no voice" in r.tags and "slow tempo" in r.tags


def test_multiline_caption_with_quotes_is_kept(made, parsed):
    root, _ = made
    raw = (root / "metadata" / "musiccaps-public.csv").read_bytes()
    # the fixture really has CRLF between records and a bare LF inside a quoted caption
    assert raw.count(b"\r\n") == len(fixture.ROWS) + 2  # header + rows + the malformed line
    assert b'shouts ""hey!"" before' in raw and b'fast song.\nThe singer' in raw
    records, _ = parsed
    r = records["musiccaps-2unse6chkMU"]
    assert r.captions[0] == fixture.CAPTION_MULTILINE
    assert "\n" in r.captions[0] and '"hey!"' in r.captions[0]
    assert r.split == "test" and r.meta["is_balanced_subset"] is True  # balanced rows are eval rows


def test_non_ascii_caption_and_double_quoted_aspect(parsed):
    records, _ = parsed
    r = records["musiccaps-5Y_mT93tkvQ"]
    assert r.captions[0] == fixture.CAPTION_UNICODE  # «, —, é, 童謡 intact
    assert r.tags == ["kids music", "children's song", "xylophone", "happy", "kids singing"]
    assert (r.start_s, r.end_s) == (0.0, 10.0)


@pytest.mark.parametrize("variant", ["lf", "crlf_everywhere"])
def test_other_line_ending_copies_parse_the_same(tmp_path, parsed, variant):
    text = fixture.csv_text()
    if variant == "lf":
        text = text.replace("\r\n", "\n")
    else:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    meta = tmp_path / "copy" / "nested"  # found at any depth under the metadata dir
    meta.mkdir(parents=True)
    (meta / "musiccaps-public.csv").write_bytes(text.encode("utf-8"))
    records, rejected = parse(tmp_path / "copy")
    expected, expected_rejected = parsed
    assert set(records) == set(expected) and set(rejected) == set(expected_rejected)
    # a caption's line break is "\n" whichever copy it came from: the records are identical
    assert records["musiccaps-2unse6chkMU"].captions[0] == fixture.CAPTION_MULTILINE
    assert records == expected


def test_valid_subset_is_hashed_by_group(made, parsed):
    root, _ = made
    records, _ = parsed
    for r in records.values():
        if r.meta["is_audioset_eval"]:
            assert r.split == "test"
        else:
            assert r.split == train_or_valid(r.group, 0, 0.1)
            assert r.split == hashed_split(r.group, 0, {"train": 0.9, "valid": 0.1})
    assert records["musiccaps-5Y_mT93tkvQ"].split == "valid"
    assert records["musiccaps-Ah_aYOGnQ_I"].split == "train"
    # no valid subset: every non-eval row is train; eval rows stay test whatever the seed
    none, _ = parse(root / "metadata", valid_fraction=0.0)
    assert {r.split for r in none.values() if not r.meta["is_audioset_eval"]} == {"train"}
    reseeded, _ = parse(root / "metadata", split_seed=7, valid_fraction=0.5)
    for track_id, r in reseeded.items():
        if r.meta["is_audioset_eval"]:
            assert r.split == "test"
        else:
            assert r.split == hashed_split(r.group, 7, {"train": 0.5, "valid": 0.5})


def test_span_from_the_row(parsed):
    records, _ = parsed
    r = records["musiccaps-Ah_aYOGnQ_I"]
    assert (r.start_s, r.end_s) == (11.0, 21.0)
    assert all(math.isclose(r.end_s - r.start_s, 10.0) for r in records.values())


def test_missing_csv_and_missing_column(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="musiccaps-public.csv"):
        parse(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "musiccaps-public.csv").write_text("ytid,start_s,end_s,caption\r\nabc,0,10,x\r\n")
    with pytest.raises(ValueError, match="aspect_list"):
        parse(bad)


def test_duplicate_ytid_rejected(tmp_path):
    text = fixture.csv_text()
    first = text.split("\r\n")[1]
    (tmp_path / "musiccaps-public.csv").write_text(text + first + "\r\n", newline="")
    records, rejected = parse(tmp_path)
    assert len(records) == 6
    assert rejected["musiccaps--0Gj8-vB1q4"] == "duplicate ytid (first on line 2)"


def test_options_and_video_url():
    source = MusicCapsSource()
    opts = source.options({})
    assert isinstance(opts, YouTubeOptions)
    assert opts.youtube_url == "https://www.youtube.com/watch?v={ytid}"
    # a full URL, never the bare id: "-0Gj8-vB1q4" would be read as an option by yt-dlp
    assert opts.video_url("-0Gj8-vB1q4") == "https://www.youtube.com/watch?v=-0Gj8-vB1q4"
    assert (opts.aspect_caption, opts.valid_fraction) == (True, 0.1)
    with pytest.raises(ValueError, match="youtube_url"):
        source.options({"youtube_url": "http://x/watch"})
    with pytest.raises(ValueError, match="bogus"):
        source.options({"bogus": 1})
    with pytest.raises(ValueError, match="valid_fraction"):
        source.options({"valid_fraction": 1.0})
    assert source.published[0].name == "musiccaps-public.csv"
    assert source.published[0].url.startswith("https://huggingface.co/datasets/google/MusicCaps/")


def test_fixture_audio_layout(made):
    root, info = made
    assert info["options"]["youtube_url"] == "{base}/youtube/{ytid}.wav"
    for row in fixture.ROWS[:6]:
        path = root / "youtube" / f"{row[0]}.wav"
        if row[0] == fixture.WITHOUT_AUDIO:
            assert not path.exists()
            assert f"musiccaps-{row[0]}" in info["expected"]["audio_fail"]
        else:
            meta = sf.info(str(path))
            assert (meta.samplerate, meta.channels) == (16000, 1)
            # The whole "video": at least 12 s and past the segment's end.
            assert abs(meta.duration - max(12.0, float(row[2]) + 2.0)) < 0.1
