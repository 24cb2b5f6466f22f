"""MusicBench source: the hub's JSON-lines files and tarball layout, the test-clip rule for
augmentations, groups shared with MusicCaps/AudioSet, and the rows it must reject."""

from __future__ import annotations

import io
import shutil
import tarfile

import pytest
import soundfile as sf
from musictext.ingest.base import hashed_split
from musictext.ingest.records import ArchiveAudio
from musictext.ingest.sources.musicbench import MusicBenchSource, source_ytid

from tests.datasets import check_expected, parse_source, source_fixtures
from tests.datasets import musicbench as fixture_mod

BASE = "http://127.0.0.1:9"


made, parsed = source_fixtures(fixture_mod.make_fixture, MusicBenchSource, BASE)


def _parse(meta_dir, **options):
    return parse_source(MusicBenchSource, meta_dir, **options)


def test_counts_splits_and_rejections_match_the_fixture(made, parsed):
    check_expected(parsed, made.info["expected"])  # records, splits (per record too), rejections
    records, rejected = parsed
    assert len(records) == 10
    assert "data_aug2/0XxinBtKouQ_1.wav" in rejected["musicbench-0XxinBtKouQ_1"]


def test_test_clip_merges_test_a_and_b_captions(parsed):
    records, _ = parsed
    rec = records["musicbench--FEPOSP7ay0"]  # a YouTube id with a leading dash
    # TestA's caption (its alt_caption is the same text) and TestB's with the control sentences.
    assert rec.captions == [fixture_mod.CAP_A, f"{fixture_mod.CAP_A} {fixture_mod.CTRL_A}"]
    assert rec.split == "test"
    assert rec.group == "yt:-FEPOSP7ay0"
    assert rec.source == "musicbench"
    assert rec.licence == "CC-BY-SA-3.0"
    assert rec.tags == []
    assert rec.audio == ArchiveAudio(urls=(f"{BASE}/audio/MusicBench.tar.gz",),
                                     member="datashare/data/-FEPOSP7ay0.wav", format="tar")
    assert (rec.start_s, rec.end_s, rec.whole_track) == (None, None, False)
    assert (rec.clip_seconds, rec.max_clips) == (10.0, 1)
    assert rec.meta == {"ytid": "-FEPOSP7ay0", "location": "data/-FEPOSP7ay0.wav", "augmented": False,
                        "bpm": 153.0, "key": "F# minor"}


def test_augmentations_of_test_clips_are_test(parsed):
    records, _ = parsed
    # Its own is_audioset_eval_mcaps is false, but its source clip is in the test files.
    aug = records["musicbench--FEPOSP7ay0_2"]
    assert (aug.split, aug.group) == ("test", "yt:-FEPOSP7ay0")
    assert aug.meta["augmented"] is True and aug.meta["key"] == "G# minor"
    assert aug.audio.member == "datashare/data_aug2/-FEPOSP7ay0_2.wav"
    # An eval clip that is not in the test files, and its augmentation: flagged, so test.
    assert records["musicbench-2MpzHv5KNZU"].split == "test"
    assert records["musicbench-2MpzHv5KNZU_1"].split == "test"
    assert records["musicbench-2MpzHv5KNZU_1"].group == "yt:2MpzHv5KNZU"
    # No train or valid record shares a group with a test record.
    test_groups = {r.group for r in records.values() if r.split == "test"}
    assert all(r.group not in test_groups for r in records.values() if r.split != "test")


def test_train_rows_keep_both_captions_and_meta(parsed):
    records, _ = parsed
    rec = records["musicbench-0LE6Ll1rVlg_1"]
    assert rec.captions == [f"{fixture_mod.GPT_TRAIN} The volume is lowered.", fixture_mod.CAP_TRAIN]
    assert rec.group == "yt:0LE6Ll1rVlg"
    assert rec.split == hashed_split("yt:0LE6Ll1rVlg", 0, {"train": 0.9, "valid": 0.1})
    assert rec.split == records["musicbench-0LE6Ll1rVlg"].split
    # An 11-character id ending in "_7" is its own group, not an augmentation of "k8Pq2Lr_z".
    k8 = records["musicbench-k8Pq2Lr_z_7"]
    assert (k8.group, k8.meta["ytid"], k8.meta["augmented"]) == ("yt:k8Pq2Lr_z_7", "k8Pq2Lr_z_7", False)
    # prompt_key is empty for this row: the key still comes from the key list.
    assert records["musicbench-3w_LsKl-3Pk"].meta["key"] == "F# minor"
    assert records["musicbench-3w_LsKl-3Pk_3"].meta == {
        "ytid": "3w_LsKl-3Pk", "location": "data_aug2/3w_LsKl-3Pk_3.wav", "augmented": True,
        "bpm": 101.2, "key": "F# minor"}


def test_youtube_ids_are_split_on_their_fixed_length():
    assert source_ytid("data_aug2/-0SdAVK79lg_1.wav") == ("-0SdAVK79lg", "1")
    assert source_ytid("data_aug2/3w_LsKl-3Pk_12.wav") == ("3w_LsKl-3Pk", "12")
    assert source_ytid("data/3w_LsKl-3Pk.wav") == ("3w_LsKl-3Pk", None)
    # An 11-character id that ends in "_<digit>" is an id, not an augmentation.
    assert source_ytid("data/k8Pq2Lr_z_7.wav") == ("k8Pq2Lr_z_7", None)
    assert source_ytid("data_aug2/k8Pq2Lr_z_7_2.wav") == ("k8Pq2Lr_z_7", "2")


def test_pandas_escaped_locations_are_read(made, parsed):
    root, _ = made
    raw = (root / "metadata" / "MusicBench_train.json").read_text()
    assert '"location":"data_aug2\\/0LE6Ll1rVlg_1.wav"' in raw
    records, _ = parsed
    assert records["musicbench-0LE6Ll1rVlg_1"].meta["location"] == "data_aug2/0LE6Ll1rVlg_1.wav"


def test_groups_never_straddle_train_and_valid(made):
    root, _ = made
    seen = set()
    for seed in range(12):
        records, _ = _parse(root / "metadata", split_seed=seed, valid_fraction=0.5)
        by_group: dict[str, set[str]] = {}
        for r in records.values():
            by_group.setdefault(r.group, set()).add(r.split)
            seen.add(r.split)
        assert all(len(s) == 1 for s in by_group.values()), by_group
        assert by_group["yt:-FEPOSP7ay0"] == {"test"}
    assert seen == {"train", "valid", "test"}


def test_every_member_is_in_the_tarball_but_the_planted_one(made, parsed):
    root, fx = made
    records, _ = parsed
    with tarfile.open(root / "audio" / "MusicBench.tar.gz", "r:gz") as tar:
        names = set(tar.getnames())
        info = sf.info(io.BytesIO(tar.extractfile("datashare/data/-FEPOSP7ay0.wav").read()))
    assert (info.samplerate, info.channels, round(info.duration, 3)) == (16000, 1, 10.0)
    missing = {t for t, r in records.items() if r.audio.member not in names}
    assert missing == set(fx["expected"]["audio_fail"]) == {"musicbench-3w_LsKl-3Pk_3"}
    assert {"datashare", "datashare/data", "datashare/data_aug2"} <= names


def test_test_file_aliases_and_repacked_archive_root(made, tmp_path):
    root, _ = made
    meta = tmp_path / "copy" / "nested"
    meta.mkdir(parents=True)
    shutil.copy(root / "metadata" / "MusicBench_train.json", meta)
    shutil.copy(root / "metadata" / "MusicBench_test_A.json", meta / "MusicBench_testA.json")
    shutil.copy(root / "metadata" / "MusicBench_test_B.json", meta / "MusicBench_testB.json")
    records, _ = _parse(tmp_path / "copy", archive_root="")
    assert len(records) == 10
    rec = records["musicbench--FEPOSP7ay0"]
    assert rec.split == "test" and len(rec.captions) == 2
    # No audio_base_url: the hub's own URL; archive_root "" means location is the member.
    assert rec.audio.urls == ("https://huggingface.co/datasets/amaai-lab/MusicBench/resolve/main/MusicBench.tar.gz",)
    assert rec.audio.member == "data/-FEPOSP7ay0.wav"


def test_missing_test_file_fails_the_listing(made, tmp_path):
    root, _ = made
    shutil.copy(root / "metadata" / "MusicBench_train.json", tmp_path)
    shutil.copy(root / "metadata" / "MusicBench_test_A.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="MusicBench_test_B.json"):
        _parse(tmp_path)


def test_published_files_have_hub_urls():
    source = MusicBenchSource()
    urls = {f.name: f.url for f in source.published}
    hub = "https://huggingface.co/datasets/amaai-lab/MusicBench/resolve/main/"
    assert urls == {n: hub + n for n in ("MusicBench_train.json", "MusicBench_test_A.json", "MusicBench_test_B.json")}
    assert source.published_file("MusicBench_test_B.json").aliases == ("MusicBench_testB.json",)
    assert source.phase == 1 and source.licence == "CC-BY-SA-3.0"
