"""embed_clips end to end on generated CLIP_SCHEMA shards: targets, meta, quarantine, re-runs."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from musictext import layout, schema, storage
from musictext.audio import build_embedder, prepare_waveform
from musictext.embed.targets import embed_clips
from musictext.config import load_family_config
from musictext.rejects import read_rejections

from tests.audio_fixtures import make_clip_shard, tone

torch.set_num_threads(1)


def fast_cfg(**audio):
    over = {"audio": {"window_s": 2, "hop_s": 1, "batch_windows": 4, "decode_workers": 2, **audio}}
    return load_family_config("muq", "demo", over)


# ----------------------------------------------------------------- tests
@pytest.fixture
def shards(tmp_path):
    sr = 24000
    good_a = [
        {"clip_id": f"a{i}#0", "split": s, "audio": {sr: tone(110 * (i + 1), sr, 1.5 + 0.5 * i)}}
        for i, s in enumerate(["train", "train", "valid", "test"])
    ]
    bad_a = [
        {"clip_id": "broken#0", "audio": {sr: b"this is not an audio file"}},
        {"clip_id": "silent#0", "audio": {sr: np.zeros(sr, dtype=np.float32)}},
        {"clip_id": "empty#0", "audio": {sr: np.zeros(0, dtype=np.float32)}, "ext": "wav", "subtype": "FLOAT"},
        {"clip_id": "nan#0", "ext": "wav", "subtype": "FLOAT",
         "audio": {sr: np.where(np.arange(sr) == 100, np.nan, tone(300, sr, 1.0)).astype(np.float32)}},
        {"clip_id": "missing#0", "audio": {sr: None}},
    ]
    shard_a = make_clip_shard(tmp_path / "clips_a", good_a + bad_a)
    stereo = np.stack([tone(220, 44100, 2.0), tone(330, 44100, 2.0)], axis=1)
    good_b = [
        # Only rendered at 44.1 kHz and 16 kHz: the 44.1 kHz file is decoded and resampled.
        {"clip_id": "b0#0", "split": "train", "audio": {44100: stereo, 16000: tone(220, 16000, 2.0)}},
        {"clip_id": "b1#0", "split": "valid", "audio": {sr: tone(523.25, sr, 3.2, bpm=90)}, "format": "flac"},
        {"clip_id": "a0#0", "split": "train", "audio": {sr: tone(99, sr, 1.0)}},  # duplicate id
    ]
    shard_b = make_clip_shard(tmp_path / "clips_b", good_b)
    return [str(shard_a), str(shard_b)], tmp_path


def test_embed_clips_end_to_end(shards):
    dirs, tmp = shards
    cfg = fast_cfg()
    out = str(tmp / "targets")
    meta = embed_clips(dirs, out, cfg)
    assert meta["skipped"] is False and meta["n"] == 6 and meta["n_rejected"] == 6
    disk_meta = storage.read_json(os.path.join(out, layout.META))
    for key, value in {
        "family": "muq", "kind": "muq_mulan", "target_dim": cfg.audio.target_dim,
        "window_dim": cfg.audio.window_dim, "sample_rate": 24000, "model": cfg.audio.model,
        "random_init": True, "n": 6, "storage_dtype": "float32",
    }.items():
        assert disk_meta[key] == value, key

    table = pq.read_table(os.path.join(out, layout.TARGETS))
    assert table.schema.equals(schema.target_schema(cfg.audio.target_dim, "float32"))
    ids = table.column("clip_id").to_pylist()
    assert ids == ["a0#0", "a1#0", "a2#0", "a3#0", "b0#0", "b1#0"]
    assert table.column("split").to_pylist() == ["train", "train", "valid", "test", "train", "valid"]
    targets = table.column("target").combine_chunks().flatten().to_numpy().reshape(6, -1)

    # Each row equals the embedder's vector for the decoded file (resampled where needed).
    emb = build_embedder(cfg.audio, device="cpu")
    stereo, rate = sf.read(Path(dirs[1]) / "audio/44100/b0_0.wav", dtype="float32", always_2d=True)
    want_b0 = emb.embed_audio_tensor(torch.from_numpy(stereo.T.copy()), rate)
    np.testing.assert_allclose(targets[4], want_b0.numpy(), atol=1e-5)
    a2, rate = sf.read(Path(dirs[0]) / "audio/24000/a2_0.wav", dtype="float32")
    np.testing.assert_allclose(targets[2], emb.embed_audio_tensor(torch.from_numpy(a2), rate).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-5)

    reasons = {r["item"]: r["reason"] for r in read_rejections(out)}
    assert set(reasons) == {"broken#0", "silent#0", "empty#0", "nan#0", "missing#0", "a0#0"}
    assert "undecodable" in reasons["broken#0"]
    assert "silent" in reasons["silent#0"]
    assert "zero-length" in reasons["empty#0"]
    assert "NaN" in reasons["nan#0"]
    assert "missing" in reasons["missing#0"]
    assert "duplicate" in reasons["a0#0"]
    assert all(r["stage"] == "embed_audio" for r in read_rejections(out))


def test_embed_clips_is_idempotent_and_config_sensitive(shards):
    dirs, tmp = shards
    out = str(tmp / "targets")
    first = embed_clips(dirs, out, fast_cfg())
    stamp = os.stat(os.path.join(out, layout.TARGETS)).st_mtime_ns
    again = embed_clips(dirs, out, fast_cfg(batch_windows=2))  # throughput knob only
    assert again["skipped"] is True and again["n"] == first["n"]
    assert os.stat(os.path.join(out, layout.TARGETS)).st_mtime_ns == stamp
    half = embed_clips(dirs, out, fast_cfg(storage_dtype="float16"))  # changes the output
    assert half["skipped"] is False
    table = pq.read_table(os.path.join(out, layout.TARGETS))
    assert table.schema.field("target").type.value_type == pa.float16()
    assert not any(name.startswith(layout.TARGETS + ".tmp") for name in os.listdir(out))
    # A damaged output (meta says n=6 but the table is gone) is redone, not trusted.
    os.remove(os.path.join(out, layout.TARGETS))
    redo = embed_clips(dirs, out, fast_cfg(storage_dtype="float16"))
    assert redo["skipped"] is False and redo["n"] == 6


def test_embed_clips_through_a_bucket_uri(tmp_path):
    sr = 24000
    local = make_clip_shard(
        tmp_path / "shard",
        [{"clip_id": f"m{i}#0", "audio": {sr: tone(200 + 90 * i, sr, 1.2)}} for i in range(3)],
    )
    mem = fsspec.filesystem("memory")
    mem.put(str(local), "/bucket/shard", recursive=True)
    meta = embed_clips(["memory://bucket/shard"], "memory://bucket/targets", fast_cfg())
    assert meta["n"] == 3
    table = storage.read_parquet("memory://bucket/targets/targets.parquet")
    assert table.column("clip_id").to_pylist() == ["m0#0", "m1#0", "m2#0"]
    assert storage.exists("memory://bucket/targets/rejected.jsonl")


def test_missing_clip_table_names_the_shard(tmp_path):
    with pytest.raises(FileNotFoundError, match="clips.parquet"):
        embed_clips([str(tmp_path / "nowhere")], str(tmp_path / "out"), fast_cfg())


def test_resampled_fallback_matches_prepare_waveform(tmp_path):
    """A clip without a file at the model rate is decoded at another rate and resampled."""
    x = tone(440, 48000, 1.5)
    make_clip_shard(tmp_path / "s", [{"clip_id": "r#0", "audio": {48000: x}}])
    cfg = fast_cfg()
    embed_clips([str(tmp_path / "s")], str(tmp_path / "o"), cfg)
    got = pq.read_table(tmp_path / "o" / layout.TARGETS).column("target").to_pylist()[0]
    decoded, rate = sf.read(tmp_path / "s/audio/48000/r_0.wav", dtype="float32")
    emb = build_embedder(cfg.audio, device="cpu")
    want = emb.embed_prepared([prepare_waveform(torch.from_numpy(decoded), rate, 24000)])[0]
    np.testing.assert_allclose(np.array(got), want.numpy(), atol=1e-5)
