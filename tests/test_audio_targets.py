"""embed_clips end to end on generated CLIP_SCHEMA shards: each target is the upload path's
vector for the family's rendering of the clip; meta, quarantine, re-runs."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from musictext import layout, schema, storage
from musictext.audio import build_embedder
from musictext.audio.families.music2latent import MONO_REASON
from musictext.clip.cut import render_clip
from musictext.config import load_family_config, m2l_native_rate_override
from musictext.embed.targets import embed_clips, embed_shard
from musictext.rejects import read_rejections

from tests.audio_fixtures import make_clip_shard, tone

torch.set_num_threads(1)


def fast_cfg(family: str = "muq", **audio):
    over = {"audio": {"batch_windows": 4, "decode_workers": 2, **audio}}
    return load_family_config(family, "demo", over)


def target_rows(out: str | Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(os.path.join(out, layout.TARGETS))
    ids = table.column("clip_id").to_pylist()
    return ids, table.column("target").combine_chunks().flatten().to_numpy().reshape(len(ids), -1)


def rendering_path(shard: str | Path, clip_id: str, rendering: str) -> str:
    row = next(r for r in pq.read_table(Path(shard) / layout.CLIPS).to_pylist() if r["clip_id"] == clip_id)
    return str(Path(shard) / schema.audio_ref_for(row["audio"], rendering)["path"])


def as_clipped(data, rate: int) -> dict:
    """A clip as the clip stage writes it for MuQ-MuLan: the native file and its mono24k
    rendering (librosa.load's result; a 24 kHz mono file, or bytes/None, is its own)."""
    if rate == 24000 and (data is None or isinstance(data, bytes) or np.ndim(data) == 1):
        return {"native": (data, rate), "mono24k": (data, rate)}
    return {"native": (data, rate), "mono24k": render_clip(np.asarray(data, np.float32).reshape(len(data), -1), rate, "mono24k")}


def stereo(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.stack([left, right], axis=1)


# ----------------------------------------------------------------- tests
@pytest.fixture
def shards(tmp_path):
    sr = 24000
    good_a = [
        {"clip_id": f"a{i}#0", "split": s, "audio": as_clipped(tone(110 * (i + 1), sr, 1.5 + 0.5 * i), sr)}
        for i, s in enumerate(["train", "train", "valid", "test"])
    ]
    bad_a = [
        {"clip_id": "broken#0", "audio": as_clipped(b"this is not an audio file", sr)},
        {"clip_id": "silent#0", "audio": as_clipped(np.zeros(sr, dtype=np.float32), sr)},
        {"clip_id": "empty#0", "audio": as_clipped(np.zeros(0, dtype=np.float32), sr),
         "ext": "wav", "subtype": "FLOAT"},
        {"clip_id": "nan#0", "ext": "wav", "subtype": "FLOAT",
         "audio": as_clipped(np.where(np.arange(sr) == 100, np.nan, tone(300, sr, 1.0)).astype(np.float32), sr)},
        {"clip_id": "missing#0", "audio": as_clipped(None, sr)},
        {"clip_id": "m2l-only#0", "audio": {"stereo44k": (stereo(tone(200, 44100, 1.0), tone(300, 44100, 1.0)), 44100)}},
    ]
    shard_a = make_clip_shard(tmp_path / "clips_a", good_a + bad_a)
    good_b = [
        # A stereo 44.1 kHz source with different channels: librosa mixes and resamples it.
        {"clip_id": "b0#0", "split": "train", "audio": as_clipped(stereo(tone(220, 44100, 2.0), tone(330, 44100, 2.0)), 44100)},
        {"clip_id": "b1#0", "split": "valid", "audio": as_clipped(tone(523.25, 48000, 3.2, bpm=90), 48000),
         "format": "flac"},
        {"clip_id": "a0#0", "split": "train", "audio": as_clipped(tone(99, sr, 1.0), sr)},  # duplicate id
    ]
    shard_b = make_clip_shard(tmp_path / "clips_b", good_b)
    return [str(shard_a), str(shard_b)], tmp_path


def test_embed_clips_end_to_end(shards):
    dirs, tmp = shards
    cfg = fast_cfg()
    out = str(tmp / "targets")
    meta = embed_clips(dirs, out, cfg)
    assert meta["skipped"] is False and meta["n"] == 6 and meta["n_rejected"] == 7
    disk_meta = storage.read_json(os.path.join(out, layout.META))
    for key, value in {
        "family": "muq", "kind": "muq_mulan", "target_dim": cfg.audio.target_dim,
        "window_dim": cfg.audio.window_dim, "sample_rate": 24000, "model": cfg.audio.model,
        "random_init": True, "n": 6, "storage_dtype": "float32", "clip_rendering": "mono24k",
        "m2l_native_rate": False,
    }.items():
        assert disk_meta[key] == value, key

    table = pq.read_table(os.path.join(out, layout.TARGETS))
    assert table.schema.equals(schema.target_schema(cfg.audio.target_dim, "float32"))
    ids, targets = target_rows(out)
    assert ids == ["a0#0", "a1#0", "a2#0", "a3#0", "b0#0", "b1#0"]
    assert table.column("split").to_pylist() == ["train", "train", "valid", "test", "train", "valid"]

    # Each row is the upload path's vector for the clip's native file (librosa, soxr_hq).
    emb = build_embedder(cfg.audio, device="cpu")
    for row, (shard, clip_id) in enumerate([(0, "a0#0"), (0, "a1#0"), (0, "a2#0"), (0, "a3#0"),
                                             (1, "b0#0"), (1, "b1#0")]):
        want = emb.embed_file(rendering_path(dirs[shard], clip_id, "native"))
        np.testing.assert_allclose(targets[row], want.numpy(), atol=1e-5, err_msg=clip_id)
    np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-5)

    reasons = {r["item"]: r["reason"] for r in read_rejections(out)}
    assert set(reasons) == {"broken#0", "silent#0", "empty#0", "nan#0", "missing#0", "m2l-only#0", "a0#0"}
    assert "undecodable" in reasons["broken#0"]
    assert "silent" in reasons["silent#0"]
    assert "zero-length" in reasons["empty#0"]
    assert "not finite" in reasons["nan#0"]  # librosa.load's own check
    assert "missing" in reasons["missing#0"]
    assert "no 'mono24k' rendering" in reasons["m2l-only#0"]
    assert "duplicate" in reasons["a0#0"]
    assert all(r["stage"] == "embed_audio" for r in read_rejections(out))


def test_music2latent_reads_the_stereo44k_rendering_or_the_native_clip(tmp_path):
    """Default: the 44.1 kHz stereo rendering; m2l_native_rate: the clip as decoded, where a mono
    clip gets no target (Navidrome stores none) and a 48 kHz one is encoded as it is."""
    mono48 = tone(196, 48000, 3.0)
    clips = [
        {"clip_id": "mono#0", "audio": {48000: mono48}},  # native mono 48 kHz + dual-mono stereo44k
        {"clip_id": "st#0", "audio": {44100: stereo(tone(220, 44100, 3.0), tone(277, 44100, 3.0, bpm=90))}},
    ]
    shard = str(make_clip_shard(tmp_path / "clips", clips))
    for native, rendering in ((False, "stereo44k"), (True, "native")):
        cfg = fast_cfg("music2latent", m2l_native_rate=native)
        out = str(tmp_path / f"out-{rendering}")
        meta = embed_clips([shard], out, cfg)
        assert (meta["clip_rendering"], meta["m2l_native_rate"]) == (rendering, native)
        assert storage.read_json(os.path.join(out, layout.META))["clip_rendering"] == rendering
        emb = build_embedder(cfg.audio, device="cpu")
        ids, targets = target_rows(out)
        for clip_id, row in zip(ids, targets):
            want = emb.embed_file(rendering_path(shard, clip_id, rendering))
            np.testing.assert_allclose(row, want.numpy(), atol=1e-5, err_msg=clip_id)
        if native:
            assert ids == ["st#0"]
            assert {r["item"]: r["reason"] for r in read_rejections(out)} == {"mono#0": MONO_REASON}
        else:
            assert ids == ["mono#0", "st#0"] and meta["n_rejected"] == 0


def test_embed_shard_passes_m2l_native_rate_to_the_families_that_have_it(tmp_path):
    clips = [{"clip_id": "st#0", "audio": {44100: stereo(tone(220, 44100, 2.0), tone(330, 44100, 2.0))}}]
    shard = str(make_clip_shard(tmp_path / "clips", clips))
    out = tmp_path / "targets"
    embed_shard(shard, str(out), ["muq", "music2latent"], "demo", m2l_native_rate=True)
    metas = {f: storage.read_json(os.path.join(out, f, layout.META)) for f in ("muq", "music2latent")}
    assert {f: (m["clip_rendering"], m["m2l_native_rate"]) for f, m in metas.items()} == {
        "muq": ("mono24k", False), "music2latent": ("native", True)}
    assert m2l_native_rate_override("muq", True) is None and m2l_native_rate_override("music2latent", False) is None


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
    legacy = embed_clips(dirs, out, fast_cfg(storage_dtype="float16", loader="torchaudio"))
    assert legacy["skipped"] is False  # another loader, other numbers
    # A damaged output (meta says n=6 but the table is gone) is redone, not trusted.
    os.remove(os.path.join(out, layout.TARGETS))
    redo = embed_clips(dirs, out, fast_cfg(storage_dtype="float16", loader="torchaudio"))
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
    local_out = tmp_path / "local-targets"
    embed_clips([str(local)], str(local_out), fast_cfg())
    got = np.array(table.column("target").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(got, target_rows(local_out)[1])  # the bytes decode alike


def test_missing_clip_table_names_the_shard(tmp_path):
    with pytest.raises(FileNotFoundError, match="clips.parquet"):
        embed_clips([str(tmp_path / "nowhere")], str(tmp_path / "out"), fast_cfg())
