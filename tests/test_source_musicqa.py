"""MusicQA source: the JSON arrays of QA pairs, the captioning answers kept as descriptions (open
questions dropped), NaN answers, the eval file as test, and ``audios.zip`` members."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import pytest
import soundfile as sf
from musictext.ingest.base import hashed_split
from musictext.ingest.records import ArchiveAudio
from musictext.ingest.sources.musicqa import CAPTION_PROMPTS, MusicQASource, is_caption_prompt

from tests.datasets import check_expected, parse_source, source_fixtures
from tests.datasets import musicqa as fixture_mod

BASE = "http://127.0.0.1:9"
LICENCE = "MIT (card); GitHub copy GPL-3.0; audio keeps its source terms (MTG-Jamendo)"


made, parsed = source_fixtures(fixture_mod.make_fixture, MusicQASource, BASE)


def _parse(meta_dir, **options):
    return parse_source(MusicQASource, meta_dir, **options)


def test_counts_splits_and_rejections_match_the_fixture(made, parsed):
    check_expected(parsed, made.info["expected"])  # records, splits (per record too), rejections
    records, rejected = parsed
    assert len(records) == 4
    assert "012545.wav" in rejected["EvalMusicQA.json[27]"]


def test_eval_clip_keeps_only_the_captioning_answers(parsed):
    records, _ = parsed
    rec = records["musicqa-012542"]
    assert rec.captions == fixture_mod.CLIP_42  # the four answers, in prompt order
    for _, open_answer in fixture_mod.OPEN_42:
        assert open_answer not in rec.captions
    assert rec.split == "test"
    assert rec.source == "musicqa"
    assert rec.group == "musicqa:012542"
    assert rec.licence == LICENCE
    assert rec.tags == []
    assert rec.audio == ArchiveAudio(urls=(f"{BASE}/audio/audios.zip",), member="audios/012542.wav", format="zip")
    assert rec.whole_track is True
    assert (rec.start_s, rec.end_s, rec.clip_seconds, rec.max_clips) == (None, None, None, None)
    assert rec.meta == {"audio_name": "012542.wav", "file": "EvalMusicQA.json", "derived_from": "MTG-Jamendo",
                        "captions_generated": True}


def test_nan_answers_are_empty_and_the_clip_is_rejected(made, parsed):
    root, _ = made
    raw = (root / "metadata" / "EvalMusicQA.json").read_text()
    assert '"value": NaN' in raw  # what json.dump writes for pandas' NaN
    records, rejected = parsed
    assert "musicqa-012544" not in records
    assert "EvalMusicQA.json" in rejected["musicqa-012544"]


def test_training_files_are_split_by_hashed_group(parsed):
    records, _ = parsed
    mtt, mc = records["musicqa-005012"], records["musicqa-000003"]
    assert mtt.captions == fixture_mod.CLIP_MTT and mc.captions == fixture_mod.CLIP_MC
    assert mtt.split == hashed_split("musicqa:005012", 0, {"train": 0.9, "valid": 0.1})
    assert mtt.licence == "MIT (card); GitHub copy GPL-3.0; audio keeps its source terms (MagnaTagATune)"
    assert mc.licence == "MIT (card); GitHub copy GPL-3.0; audio keeps its source terms (MusicCaps)"
    assert mc.meta["file"] == "PretrainMusicQA.json" and mc.meta["captions_generated"] is True


def test_valid_subset_appears_and_eval_stays_test(made):
    root, _ = made
    seen = {}
    for seed in range(16):
        records, _ = _parse(root / "metadata", split_seed=seed, valid_fraction=0.5)
        assert records["musicqa-012542"].split == "test"
        for t in ("musicqa-005012", "musicqa-000003"):
            seen.setdefault(t, set()).add(records[t].split)
    assert all(s == {"train", "valid"} for s in seen.values()), seen


def test_caption_prompts_match_case_insensitively():
    assert CAPTION_PROMPTS == ("Describe the audio", "Describe the audio in detail",
                               "What do you hear in the audio?", "What can be inferred from the audio?")
    for prompt in ("Describe the audio", "describe the audio.", " DESCRIBE THE AUDIO IN DETAIL ",
                   "What do you hear in the audio", "what can be inferred from the  audio?"):
        assert is_caption_prompt(prompt), prompt
    for prompt in ("What is rock music known for?", "Describe the audio's tempo", "What is the mood of the audio?",
                   None, 3):
        assert not is_caption_prompt(prompt), prompt


def test_zip_members_and_the_missing_one(made, parsed):
    root, fx = made
    records, _ = parsed
    with zipfile.ZipFile(root / "audio" / "audios.zip") as zf:
        names = set(zf.namelist())
        info = sf.info(io.BytesIO(zf.read("audios/012542.wav")))
    assert (info.samplerate, info.channels, round(info.duration, 3)) == (16000, 1, 12.0)
    missing = {t for t, r in records.items() if r.audio.member not in names}
    assert missing == set(fx["expected"]["audio_fail"]) == {"musicqa-012543"}


def test_a_clip_in_eval_and_training_is_test_with_merged_captions(tmp_path):
    def write(name, elements):
        (tmp_path / name).write_text(json.dumps(elements, indent=2))

    write("EvalMusicQA.json", fixture_mod._clip("000777.wav", fixture_mod.CLIP_42[:2] + ["", ""], []))
    write("MusicQA.json", fixture_mod._clip("000777.wav", fixture_mod.CLIP_MTT, fixture_mod.OPEN_GENERIC)
          + fixture_mod._clip("000001.wav", fixture_mod.CLIP_MC, []))
    records, rejected = _parse(tmp_path, archive_root="")
    assert rejected == {}
    rec = records["musicqa-000777"]
    assert rec.split == "test"
    assert rec.captions == fixture_mod.CLIP_42[:2] + fixture_mod.CLIP_MTT
    # MusicQA.json (older copies) stands in for FinetuneMusicQA.json.
    assert records["musicqa-000001"].meta["file"] == "MusicQA.json"
    # No audio_base_url: the hub's own URL; archive_root "" means audio_name is the member.
    assert records["musicqa-000001"].audio.urls == ("https://huggingface.co/datasets/mu-llama/MusicQA/resolve/main/audios.zip",)
    assert records["musicqa-000001"].audio.member == "000001.wav"


def test_broken_training_file_is_rejected_and_eval_still_listed(made, tmp_path):
    root, _ = made
    shutil.copy(root / "metadata" / "EvalMusicQA.json", tmp_path)
    (tmp_path / "FinetuneMusicQA.json").write_text('[{"audio_name": "000001.wav", "conversation": [')
    (tmp_path / "PretrainMusicQA.json").write_text('{"audio_name": "000002.wav"}')
    records, rejected = _parse(tmp_path)
    assert set(records) == {"musicqa-012542", "musicqa-012543"}
    assert "not a valid JSON file" in rejected["FinetuneMusicQA.json"]
    assert "not a JSON array" in rejected["PretrainMusicQA.json"]


def test_missing_eval_file_fails_the_listing(made, tmp_path):
    root, _ = made
    shutil.copy(root / "metadata" / "FinetuneMusicQA.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="EvalMusicQA.json"):
        _parse(tmp_path)


def test_source_attributes():
    source = MusicQASource()
    hub = "https://huggingface.co/datasets/mu-llama/MusicQA/resolve/main/"
    assert {f.name: (f.url, f.required) for f in source.published} == {
        "EvalMusicQA.json": (hub + "EvalMusicQA.json", True),
        "FinetuneMusicQA.json": (hub + "FinetuneMusicQA.json", False),
        "PretrainMusicQA.json": (hub + "PretrainMusicQA.json", False),
    }
    assert source.published_file("FinetuneMusicQA.json").aliases == ("MusicQA.json",)
    assert source.phase == 2 and source.licence == LICENCE
