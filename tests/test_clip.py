"""clip_shard on hand-made raw shards: good files in several formats and every kind of bad one."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch

from musictext import layout, schema, storage
from musictext.audio.resample import resample
from musictext.clip.cut import (
    clip_file_name,
    clip_shard,
    cut_clips,
    encode_clip,
    resolve_audio,
)
from musictext.rejects import read_rejections

torch.set_num_threads(1)
RATES = [24000, 44100]
CLIP_S = 5.0


def _tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _row(track_id: str, path: str, captions=("a tone",)) -> dict:
    return {"track_id": track_id, "source": "fixture", "split": "train", "path": path,
            "captions": list(captions), "tags": ["tone"], "licence": "CC0-1.0"}


@pytest.fixture(scope="module")
def raw_shard(tmp_path_factory):
    """A raw shard with good tracks in four formats and one of each failure."""
    root = tmp_path_factory.mktemp("raw")
    (root / "audio").mkdir()
    audio = {}

    def write(name, data, rate, **kw):
        sf.write(root / "audio" / name, data, rate, **kw)
        audio[name] = (data, rate)

    left, right = _tone(12.0, 48000, 440), _tone(12.0, 48000, 660, 0.3)
    write("stereo48.wav", np.stack([left, right], axis=1), 48000, subtype="FLOAT")
    write("short22.flac", _tone(3.5, 22050, 300), 22050)
    write("song.mp3", _tone(4.0, 44100, 500), 44100, format="MP3")
    write("song.ogg", _tone(2.0, 32000, 700), 32000, format="OGG", subtype="VORBIS")
    write("silent.wav", np.zeros(48000, np.float32), 48000)
    nan = _tone(3.0, 16000)
    nan[100] = np.nan
    write("nan.wav", nan, 16000, subtype="FLOAT")
    write("empty.wav", np.zeros(0, np.float32), 16000)
    write("tiny.wav", _tone(0.5, 16000), 16000)
    (root / "audio" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio at all" * 10)

    rows = [
        _row("stereo", "audio/stereo48.wav", ["  two tones  ", "", "   "]),
        _row("short", "audio/short22.flac"),
        _row("mp3/track 1", "audio/song.mp3"),
        _row("ogg", "audio/song.ogg"),
        _row("silent", "audio/silent.wav"),
        _row("nan", "audio/nan.wav"),
        _row("empty", "audio/empty.wav"),
        _row("tiny", "audio/tiny.wav"),
        _row("corrupt", "audio/corrupt.wav"),
        _row("missing", "audio/missing.wav"),
        _row("nocaps", "audio/short22.flac", ["", "  \n "]),
        _row("stereo", "audio/short22.flac"),  # duplicate id
    ]
    lines = [json.dumps(r) for r in rows]
    lines.insert(3, "{not json")
    lines.append(json.dumps({"track_id": "partial", "path": "audio/song.ogg"}))
    (root / layout.MANIFEST).write_text("\n".join(lines) + "\n")
    return root, audio


@pytest.fixture(scope="module")
def clipped(raw_shard, tmp_path_factory):
    root, _ = raw_shard
    out = tmp_path_factory.mktemp("clips")
    summary = clip_shard(str(root), str(out), RATES, CLIP_S, max_clips_per_track=2, min_seconds=1.0)
    table = storage.read_parquet(str(out / layout.CLIPS))
    return out, summary, {r["clip_id"]: r for r in table.to_pylist()}, table


def test_clips_table_and_counts(clipped):
    _, summary, rows, table = clipped
    assert table.schema.equals(schema.CLIP_SCHEMA)
    assert sorted(rows) == ["mp3/track 1#0", "ogg#0", "short#0", "stereo#0", "stereo#1"]
    assert summary["tracks"] == 14 and summary["clips"] == 5 and summary["rejected"] == 10
    assert summary["sample_rates"] == RATES
    assert rows["stereo#0"]["captions"] == ["two tones"]
    assert (rows["stereo#1"]["start_s"], rows["stereo#1"]["end_s"]) == (5.0, 10.0)
    assert rows["short#0"]["start_s"] == 0.0 and rows["short#0"]["end_s"] == pytest.approx(3.5)


def test_every_clip_exists_at_every_rate_with_the_right_length(clipped):
    out, _, rows, _ = clipped
    for row in rows.values():
        assert [a["sample_rate"] for a in row["audio"]] == RATES
        for ref in row["audio"]:
            assert ref["path"].startswith(f"audio/{ref['sample_rate']}/") and ref["path"].endswith(".wav")
            info = sf.info(str(out / ref["path"]))
            assert info.samplerate == ref["sample_rate"] and info.channels == 1
            assert info.frames == math.ceil(CLIP_S * ref["sample_rate"]), (row["clip_id"], ref)


def test_clip_audio_is_the_direct_resample_of_the_mono_mix(clipped, raw_shard):
    out, _, rows, _ = clipped
    stereo, rate = raw_shard[1]["stereo48.wav"]
    mono = stereo.mean(axis=1)
    second = torch.from_numpy(np.ascontiguousarray(mono[5 * rate : 10 * rate]))
    for ref in rows["stereo#1"]["audio"]:
        got, _ = sf.read(str(out / ref["path"]), dtype="float32")
        want = resample(second, rate, ref["sample_rate"]).numpy()
        assert np.abs(got - want).max() < 1e-6  # float WAV: the resampler output (up to mono-mix rounding)


def test_flac_clips_hold_the_default_float_wav_samples_rounded_to_24_bits(clipped, raw_shard, tmp_path):
    out, summary, rows, _ = clipped
    assert summary["clip_format"] == "wav" and summary["clipped_samples"] == 0
    flac = clip_shard(str(raw_shard[0]), str(tmp_path / "flac"), RATES, CLIP_S, max_clips_per_track=2,
                      min_seconds=1.0, clip_format="flac")
    assert flac["clip_format"] == "flac" and flac["clips"] == summary["clips"]
    table = storage.read_parquet(str(tmp_path / "flac" / layout.CLIPS))
    for row in table.to_pylist():
        for ref, wav_ref in zip(row["audio"], rows[row["clip_id"]]["audio"]):
            info = sf.info(str(tmp_path / "flac" / ref["path"]))
            assert ref["path"].endswith(".flac") and (info.format, info.subtype) == ("FLAC", "PCM_24")
            assert sf.info(str(out / wav_ref["path"])).subtype == "FLOAT"
            got, _ = sf.read(str(tmp_path / "flac" / ref["path"]), dtype="float64")
            want, _ = sf.read(str(out / wav_ref["path"]), dtype="float64")
            np.testing.assert_array_equal(got * 2**23, np.round(got * 2**23))
            assert np.abs(got - np.clip(want, -1, 1 - 2**-23)).max() <= 2**-24, (row["clip_id"], ref["sample_rate"])


def test_encode_clip_flac_rounds_to_the_nearest_24_bit_level_and_counts_clipping():
    step = 2.0**-23
    x = np.array([0.0, 0.4 * step, 0.6 * step, -0.6 * step, 1000.4 * step, 0.999, 1.5, -1.0, -1.2],
                 dtype=np.float32)
    data, clipped = encode_clip(x, 8000, "flac")
    got, rate = sf.read(io.BytesIO(data), dtype="int32")
    assert rate == 8000 and clipped == 2  # 1.5 and -1.2; -1.0 is representable
    levels = got // 256
    assert levels[:5].tolist() == [0, 0, 1, -1, 1000]
    assert levels[6] == 2**23 - 1 and levels[7] == levels[8] == -(2**23)
    assert abs(levels[5] * step - float(x[5])) <= step / 2


def test_encode_clip_wav_keeps_every_float_sample():
    x = np.array([0.0, 1e-9, -0.3, 0.999, 1.5, -1.2], dtype=np.float32)
    data, clipped = encode_clip(x, 8000)
    got, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 8000 and clipped == 0 and np.array_equal(got, x)


def test_short_track_is_zero_padded(clipped):
    out, _, rows, _ = clipped
    ref = rows["short#0"]["audio"][0]
    got, sr = sf.read(str(out / ref["path"]), dtype="float32")
    assert np.abs(got[int(3.6 * sr) :]).max() < 1e-4 < np.abs(got[: int(3.4 * sr)]).max()


def test_every_bad_input_is_rejected_with_a_reason(clipped):
    out, _, _, _ = clipped
    reasons = {r["item"]: r["reason"] for r in read_rejections(str(out))}
    expected = {
        "silent": "silent", "nan": "NaN", "empty": "zero-length", "tiny": "too short",
        "corrupt": "undecodable", "missing": "missing", "nocaps": "caption",
        "stereo": "duplicate", "partial": "lacks", "manifest.jsonl:4": "JSON",
    }
    assert set(reasons) == set(expected)
    for item, word in expected.items():
        assert word in reasons[item], (item, reasons[item])
    assert all(r["stage"] == "clip" for r in read_rejections(str(out)))


def test_read_clips_concatenates_shards(clipped, tmp_path):
    out, _, rows, table = clipped
    other = tmp_path / "other"
    storage.write_parquet(str(other / layout.CLIPS), table.slice(0, 2))
    both = layout.read_clips([str(out), str(other)])
    assert both.num_rows == len(rows) + 2
    assert both.column("shard_dir").to_pylist() == [str(out)] * len(rows) + [str(other)] * 2
    first = both.slice(0, 1).to_pylist()[0]
    assert storage.exists(resolve_audio(first["shard_dir"], first["audio"][0]["path"]))
    with pytest.raises(ValueError):
        layout.read_clips([])


def test_cut_windows_drops_short_tails_and_caps_the_count():
    mono = np.ones(65, np.float32)
    wins = cut_clips(mono, 10, clip_seconds=2.0, max_clips=5, min_seconds=1.0)
    assert [(k, s, real) for k, s, _, real in wins] == [(0, 0, 20), (1, 20, 20), (2, 40, 20)]
    wins = cut_clips(np.ones(75, np.float32), 10, 2.0, 5, 1.0)
    assert [real for *_, real in wins] == [20, 20, 20, 15] and wins[-1][2][15:].sum() == 0
    assert len(cut_clips(np.ones(75, np.float32), 10, 2.0, 2, 1.0)) == 2


def test_clip_file_names_are_safe_and_distinct():
    a, b = clip_file_name("x/y z#0"), clip_file_name("x_y_z#0")
    assert a != b and "/" not in a and " " not in a and "#" not in a


def test_bad_arguments_and_missing_manifest(tmp_path):
    with pytest.raises(ValueError):
        clip_shard(str(tmp_path), str(tmp_path / "o"), [], 5.0)
    with pytest.raises(ValueError):
        clip_shard(str(tmp_path), str(tmp_path / "o"), [24000], 5.0, min_seconds=6.0)
    with pytest.raises(ValueError, match="clip_format"):
        clip_shard(str(tmp_path), str(tmp_path / "o"), [24000], 5.0, clip_format="mp3")
    with pytest.raises(FileNotFoundError, match="manifest"):
        clip_shard(str(tmp_path), str(tmp_path / "o"), [24000], 5.0)


def test_empty_shard_writes_an_empty_table(tmp_path):
    (tmp_path / layout.MANIFEST).write_text("")
    summary = clip_shard(str(tmp_path), str(tmp_path / "o"), [24000], 5.0)
    table = storage.read_parquet(str(tmp_path / "o" / layout.CLIPS))
    assert summary["clips"] == 0 and table.num_rows == 0 and table.schema.equals(schema.CLIP_SCHEMA)
    assert isinstance(table, pa.Table)
