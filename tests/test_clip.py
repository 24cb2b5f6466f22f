"""clip_shard on hand-made raw shards: good files in several formats, channel counts and rates,
and every kind of bad one."""

from __future__ import annotations

import io
import json
import math

import librosa
import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch

from musictext import layout, schema, storage
from musictext.clip.cut import (
    clip_file_name,
    clip_shard,
    clip_spans,
    downmix_matrix,
    encode_clip,
    renderings_for,
    to_stereo,
)
from musictext.rejects import read_rejections

torch.set_num_threads(1)
RENDERINGS = ["native", "mono24k", "stereo44k"]
CLIP_S = 5.0
R = 1 / math.sqrt(2)  # -3 dB


def _tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _row(track_id: str, path: str, captions=("a tone",)) -> dict:
    return {"track_id": track_id, "source": "fixture", "split": "train", "path": path,
            "captions": list(captions), "tags": ["tone"], "licence": "CC0-1.0"}


@pytest.fixture(scope="module")
def raw_shard(tmp_path_factory):
    """A raw shard with good tracks in four formats and three channel counts, and one of each failure."""
    root = tmp_path_factory.mktemp("raw")
    (root / "audio").mkdir()

    def write(name, data, rate, **kw):
        sf.write(root / "audio" / name, data, rate, **kw)

    left, right = _tone(12.0, 48000, 440), _tone(12.0, 48000, 660, 0.3)
    write("stereo48.wav", np.stack([left, right], axis=1), 48000, subtype="FLOAT")
    write("short22.flac", _tone(3.5, 22050, 300), 22050)  # 16-bit mono
    write("song.mp3", _tone(4.0, 44100, 500), 44100, format="MP3")
    write("song.ogg", _tone(2.0, 32000, 700), 32000, format="OGG", subtype="VORBIS")
    surround = np.stack([_tone(6.0, 44100, 200 * (c + 1), 0.15 * (c + 1)) for c in range(6)], axis=1)
    write("surround.wav", surround, 44100, subtype="PCM_24")  # 5.1 in WAVE order
    write("gap.wav", np.concatenate([_tone(5.0, 16000), np.zeros(80000, np.float32)]), 16000)
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
        _row("surround", "audio/surround.wav"),
        _row("gap", "audio/gap.wav"),
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
    return root


def _source(raw_shard, name: str) -> tuple[np.ndarray, int]:
    """The source file as the clip stage and librosa decode it: float32 [samples, channels]."""
    return sf.read(str(raw_shard / "audio" / name), dtype="float32", always_2d=True)


def _read(path) -> tuple[np.ndarray, int]:
    return sf.read(str(path), dtype="float32", always_2d=True)


@pytest.fixture(scope="module")
def clipped(raw_shard, tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    summary = clip_shard(str(raw_shard), str(out), RENDERINGS, CLIP_S, max_clips_per_track=2, min_seconds=1.0)
    table = storage.read_parquet(str(out / layout.CLIPS))
    return out, summary, {r["clip_id"]: r for r in table.to_pylist()}, table


def _refs(row) -> dict:
    return {r["rendering"]: r for r in row["audio"]}


def test_clips_table_and_counts(clipped):
    _, summary, rows, table = clipped
    assert table.schema.equals(schema.CLIP_SCHEMA)
    assert sorted(rows) == ["gap#0", "mp3/track 1#0", "ogg#0", "short#0", "stereo#0", "stereo#1",
                            "surround#0", "surround#1"]
    assert summary["tracks"] == 16 and summary["clips"] == 8 and summary["rejected"] == 11
    assert summary["renderings"] == RENDERINGS and summary["downmixed_tracks"] == 1
    # Manifest rows without a phase (written before records carried one), none whole-track: clips.
    assert {r["phase"] for r in rows.values()} == {schema.CLIP_PHASE} and summary["full_songs"] == 0
    assert rows["stereo#0"]["captions"] == ["two tones"]
    assert (rows["stereo#1"]["start_s"], rows["stereo#1"]["end_s"]) == (5.0, 10.0)
    assert rows["short#0"]["start_s"] == 0.0 and rows["short#0"]["end_s"] == pytest.approx(3.5)
    assert (rows["surround#1"]["start_s"], rows["surround#1"]["end_s"]) == (5.0, 6.0)


def test_every_clip_has_each_rendering_at_its_rate_channels_and_length(clipped, raw_shard):
    out, _, rows, _ = clipped
    sources = {"stereo": "stereo48.wav", "short": "short22.flac", "mp3/track 1": "song.mp3",
               "ogg": "song.ogg", "surround": "surround.wav", "gap": "gap.wav"}
    for clip_id, row in rows.items():
        refs = _refs(row)
        assert [r["rendering"] for r in row["audio"]] == RENDERINGS
        info = sf.info(str(raw_shard / "audio" / sources[row["track_id"]]))
        seconds = row["end_s"] - row["start_s"]
        native, mono, stereo = refs["native"], refs["mono24k"], refs["stereo44k"]
        assert (native["sample_rate"], native["channels"]) == (info.samplerate, info.channels)
        assert (mono["sample_rate"], mono["channels"]) == (24000, 1)
        assert (stereo["sample_rate"], stereo["channels"]) == (44100, 2)
        for ref in (native, mono, stereo):
            assert ref["path"].startswith(f"audio/{ref['rendering']}/") and ref["path"].endswith(".wav")
            file = sf.info(str(out / ref["path"]))
            assert (file.samplerate, file.channels, file.subtype) == (ref["sample_rate"], ref["channels"], "FLOAT")
            if ref is mono:  # librosa.load's own length (soxr): checked against that call below
                continue
            # Exactly the clip's audio, at the rendering's rate: no padding.
            assert file.frames == math.ceil(round(seconds * info.samplerate) * ref["sample_rate"] / info.samplerate), (
                clip_id, ref)


def test_native_rendering_is_the_decoded_source_segment(clipped, raw_shard):
    out, _, rows, _ = clipped
    for clip_id, name in [("stereo#1", "stereo48.wav"), ("mp3/track 1#0", "song.mp3"),
                          ("surround#0", "surround.wav"), ("short#0", "short22.flac")]:
        source, rate = _source(raw_shard, name)
        row = rows[clip_id]
        want = source[round(row["start_s"] * rate) : round(row["end_s"] * rate)]
        got, got_rate = _read(out / _refs(row)["native"]["path"])
        assert got_rate == rate and np.array_equal(got, want), clip_id


def test_mono24k_rendering_is_what_librosa_loads_from_the_native_clip(clipped):
    """The upload path of MuQ-MuLan and MERT, applied to the native clip file, gives exactly the
    mono24k samples, and loading the mono24k file the same way gives them back unchanged."""
    out, _, rows, _ = clipped
    for clip_id in ("stereo#1", "mp3/track 1#0", "surround#0", "short#0"):
        refs = _refs(rows[clip_id])
        want, _ = librosa.load(str(out / refs["native"]["path"]), sr=24000, mono=True)
        got, _ = librosa.load(str(out / refs["mono24k"]["path"]), sr=24000, mono=True)
        assert np.array_equal(got, want), clip_id


def test_stereo44k_rendering_follows_the_documented_recipe(clipped, raw_shard):
    """Independently: L = R for mono, BS.775 for 5.1, soxr_hq (librosa.resample) to 44.1 kHz."""
    out, _, rows, _ = clipped

    def stereo_of(clip_id):
        return _read(out / _refs(rows[clip_id])["stereo44k"]["path"])[0]

    # 48 kHz stereo: each channel resampled, L and R kept apart.
    source, _ = _source(raw_shard, "stereo48.wav")
    want = librosa.resample(source[5 * 48000 : 10 * 48000].T, orig_sr=48000, target_sr=44100, res_type="soxr_hq")
    got = stereo_of("stereo#1")
    np.testing.assert_array_equal(got, want.T)
    assert np.abs(got[:, 0] - got[:, 1]).max() > 0.1
    # 22.05 kHz mono: dual-mono, then resampled.
    mono, _ = _source(raw_shard, "short22.flac")
    want = librosa.resample(mono[:, 0], orig_sr=22050, target_sr=44100, res_type="soxr_hq")
    got = stereo_of("short#0")
    np.testing.assert_array_equal(got[:, 0], want)
    np.testing.assert_array_equal(got[:, 1], want)
    # 44.1 kHz mono (MP3): no resampling, the decoded samples as L and R.
    mp3, _ = _source(raw_shard, "song.mp3")
    np.testing.assert_array_equal(stereo_of("mp3/track 1#0"), np.repeat(mp3, 2, axis=1))
    # 44.1 kHz 5.1: Lo = L + C/√2 + Ls/√2, Ro = R + C/√2 + Rs/√2, LFE dropped.
    surround, _ = _source(raw_shard, "surround.wav")
    fl, fr, fc, _lfe, bl, br = surround[: 5 * 44100].T
    want = np.stack([fl + R * fc + R * bl, fr + R * fc + R * br], axis=1)
    np.testing.assert_allclose(stereo_of("surround#0"), want, rtol=0, atol=1e-6)


def test_downmix_rules():
    np.testing.assert_allclose(downmix_matrix(6), [[1, 0], [0, 1], [R, R], [0, 0], [R, 0], [0, R]])
    np.testing.assert_allclose(downmix_matrix(8), [[1, 0], [0, 1], [R, R], [0, 0], [R, 0], [0, R], [R, 0], [0, R]])
    np.testing.assert_allclose(downmix_matrix(3), [[1, 0], [0, 1], [R, R]])
    np.testing.assert_allclose(downmix_matrix(7)[4], [0.5, 0.5])  # back centre of 6.1
    np.testing.assert_allclose(downmix_matrix(10), [[1, 0], [0, 1]] + [[R, R]] * 8)
    with pytest.raises(ValueError, match="more than two"):
        downmix_matrix(2)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert to_stereo(x) is x
    np.testing.assert_array_equal(to_stereo(x[:, :1]), x[:, [0, 0]])


def test_renderings_for_follow_the_family_configs():
    assert renderings_for(["muq", "mert"], "demo") == ["mono24k"]
    assert renderings_for(["music2latent"], "demo") == ["stereo44k"]
    assert renderings_for(["music2latent", "muq"], "production") == ["mono24k", "stereo44k"]
    # m2l_native_rate: Music2Latent reads the native clip as Navidrome reads a user's file.
    assert renderings_for(["music2latent", "muq"], "demo", m2l_native_rate=True) == ["native", "mono24k"]


def test_flac_clips_hold_the_default_float_wav_samples_rounded_to_24_bits(clipped, raw_shard, tmp_path):
    out, summary, rows, _ = clipped
    assert summary["clip_format"] == "wav" and summary["clipped_samples"] == 0
    flac = clip_shard(str(raw_shard), str(tmp_path / "flac"), RENDERINGS, CLIP_S, max_clips_per_track=2,
                      min_seconds=1.0, clip_format="flac")
    assert flac["clip_format"] == "flac" and flac["clips"] == summary["clips"]
    # The 5.1 downmix of the loud channels exceeds full scale: clipped to fit 24 bits, counted.
    assert flac["clipped_samples"] > 0
    table = storage.read_parquet(str(tmp_path / "flac" / layout.CLIPS))
    for row in table.to_pylist():
        for ref, wav_ref in zip(row["audio"], rows[row["clip_id"]]["audio"]):
            info = sf.info(str(tmp_path / "flac" / ref["path"]))
            assert ref["path"].endswith(".flac") and (info.format, info.subtype) == ("FLAC", "PCM_24")
            assert sf.info(str(out / wav_ref["path"])).subtype == "FLOAT"
            got, _ = sf.read(str(tmp_path / "flac" / ref["path"]), dtype="float64")
            want, _ = sf.read(str(out / wav_ref["path"]), dtype="float64")
            np.testing.assert_array_equal(got * 2**23, np.round(got * 2**23))
            assert np.abs(got - np.clip(want, -1, 1 - 2**-23)).max() <= 2**-24, (row["clip_id"], ref["rendering"])
            if row["track_id"] == "short" and ref["rendering"] == "native":
                np.testing.assert_array_equal(got, want)  # a 16-bit source: lossless


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


def test_encode_clip_wav_keeps_every_float_sample_and_channel():
    x = np.array([[0.0, 1e-9], [-0.3, 0.999], [1.5, -1.2]], dtype=np.float32)
    data, clipped = encode_clip(x, 8000)
    got, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 8000 and clipped == 0 and np.array_equal(got, x)


def test_short_tracks_and_tails_keep_their_own_length(clipped):
    out, _, rows, _ = clipped
    got, sr = _read(out / _refs(rows["short#0"])["native"]["path"])
    assert (sr, len(got)) == (22050, round(3.5 * 22050)) and np.abs(got[-100:]).max() > 1e-3
    tail, _ = _read(out / _refs(rows["surround#1"])["native"]["path"])
    assert len(tail) == 44100  # the last 1 s of a 6 s track


def test_every_bad_input_is_rejected_with_a_reason(clipped):
    out, _, _, _ = clipped
    reasons = {r["item"]: r["reason"] for r in read_rejections(str(out))}
    expected = {
        "silent": "silent", "nan": "NaN", "empty": "zero-length", "tiny": "too short",
        "corrupt": "undecodable", "missing": "missing", "nocaps": "caption",
        "stereo": "duplicate", "partial": "lacks", "manifest.jsonl:4": "JSON",
        "gap#1": "silent clip",
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
    ref = schema.audio_ref_for(first["audio"], "stereo44k")
    assert storage.exists(storage.join(first["shard_dir"], ref["path"]))
    with pytest.raises(KeyError, match="no 'mono' rendering"):
        schema.audio_ref_for(first["audio"], "mono")
    with pytest.raises(ValueError):
        layout.read_clips([])


def test_clip_spans_keep_long_enough_tails_and_cap_the_count():
    assert clip_spans(65, 10, clip_seconds=2.0, max_clips=5, min_seconds=1.0) == [(0, 0, 20), (1, 20, 40), (2, 40, 60)]
    assert clip_spans(75, 10, 2.0, 5, 1.0) == [(0, 0, 20), (1, 20, 40), (2, 40, 60), (3, 60, 75)]
    assert len(clip_spans(75, 10, 2.0, 2, 1.0)) == 2
    assert clip_spans(5, 10, 2.0, 3, 1.0) == []


def test_clip_file_names_are_safe_and_distinct():
    a, b = clip_file_name("x/y z#0"), clip_file_name("x_y_z#0")
    assert a != b and "/" not in a and " " not in a and "#" not in a


def test_bad_arguments_and_missing_manifest(tmp_path):
    with pytest.raises(ValueError, match="renderings"):
        clip_shard(str(tmp_path), str(tmp_path / "o"), [], 5.0)
    with pytest.raises(ValueError, match="renderings"):
        clip_shard(str(tmp_path), str(tmp_path / "o"), ["native", "mono22k"], 5.0)
    with pytest.raises(ValueError):
        clip_shard(str(tmp_path), str(tmp_path / "o"), ["native"], 5.0, min_seconds=6.0)
    with pytest.raises(ValueError, match="clip_format"):
        clip_shard(str(tmp_path), str(tmp_path / "o"), ["native"], 5.0, clip_format="mp3")
    with pytest.raises(FileNotFoundError, match="manifest"):
        clip_shard(str(tmp_path), str(tmp_path / "o"), ["native"], 5.0)


def test_empty_shard_writes_an_empty_table(tmp_path):
    (tmp_path / layout.MANIFEST).write_text("")
    summary = clip_shard(str(tmp_path), str(tmp_path / "o"), ["native"], 5.0)
    table = storage.read_parquet(str(tmp_path / "o" / layout.CLIPS))
    assert summary["clips"] == 0 and table.num_rows == 0 and table.schema.equals(schema.CLIP_SCHEMA)
    assert isinstance(table, pa.Table)


def test_phase_from_the_manifest_row(tmp_path):
    """A row's own phase wins; a row without one is a full song when whole-track, else a clip;
    a phase outside schema.PHASES rejects the track."""
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "t.wav", _tone(12.0, 16000), 16000)
    rows = [
        {**_row("legacy-whole", "audio/t.wav"), "whole_track": True},
        _row("legacy-windows", "audio/t.wav"),
        {**_row("song", "audio/t.wav"), "whole_track": True, "phase": 2},
        {**_row("long-clip", "audio/t.wav"), "whole_track": True, "phase": 1},
        {**_row("bad", "audio/t.wav"), "phase": 3},
    ]
    (tmp_path / layout.MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = clip_shard(str(tmp_path), str(tmp_path / "o"), ["native"], CLIP_S, max_clips_per_track=3)
    got = {r["clip_id"]: r["phase"] for r in storage.read_parquet(str(tmp_path / "o" / layout.CLIPS)).to_pylist()}
    assert got == {"legacy-whole#0": 2, "legacy-windows#0": 1, "legacy-windows#1": 1, "legacy-windows#2": 1,
                   "song#0": 2, "long-clip#0": 1}
    assert summary["full_songs"] == 2
    assert read_rejections(str(tmp_path / "o")) == [
        {"stage": "clip", "item": "bad", "reason": "bad manifest row: phase: Input should be 1 or 2 (got 3)"}]
