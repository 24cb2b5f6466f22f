"""The training targets of a demo run are the vectors Navidrome's upload path stores for the
same source audio.

Runs the real stages as library calls (synthetic download, clip, per-shard embedding; demo
profile, all three families) and recomputes every target with ``embed_file`` on a file this
test writes itself from the raw track: for MuQ-MuLan and MERT the clip's segment of the source
file as decoded; for Music2Latent that segment as a 44.1 kHz stereo file (L = R for a mono
source, librosa's soxr_hq for another rate), or, with ``m2l_native_rate``, the segment as it
is. Besides the synthetic tracks (44.1 kHz stereo) the shard holds a user's mono 32 kHz file
and stereo 48 kHz file, so the dual-mono, resampling and native-rate paths all run.
"""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from musictext import layout, storage
from musictext.audio import build_embedder
from musictext.clip.cut import clip_shard, renderings_for
from musictext.config import FAMILIES as CONFIG_FAMILIES, load_family_config
from musictext.embed.targets import embed_clips, embed_shard
from musictext.ingest.download import download_shard
from musictext.ingest.plan import plan
from tests.audio_fixtures import tone

torch.set_num_threads(2)
FAMILIES = list(CONFIG_FAMILIES)
TOLERANCE = 1e-5
CLIP_S = 4.0  # synthetic tracks last 6-10 s: a full clip and a 2-4 s tail each
NATIVE_M2L = {"audio": {"m2l_native_rate": True}}


def _melody(rate: int, seconds: float, f0: float) -> np.ndarray:
    """Notes of 0.7 s on a rising and falling line: no two 1 s hops hold the same audio."""
    notes = [tone(f0 * 2 ** (((3 * k) % 11) / 12), rate, 0.7, bpm=85) for k in range(int(seconds / 0.7) + 1)]
    return np.concatenate(notes)[: int(seconds * rate)]


def _user_tracks(raw) -> list[dict]:
    """A mono 32 kHz file and a stereo 48 kHz file (L and R differ), added to the raw shard."""
    mono = _melody(32000, 7.0, 180.0)
    stereo = np.stack([_melody(48000, 6.5, 260.0), 0.5 * _melody(48000, 6.5, 390.0)], axis=1)
    rows = []
    for track_id, data, rate in [("user-mono-32k", mono, 32000), ("user-stereo-48k", stereo, 48000)]:
        sf.write(raw / "audio" / f"{track_id}.wav", data, rate, subtype="PCM_16")
        rows.append({"track_id": track_id, "source": "user", "split": "train", "path": f"audio/{track_id}.wav",
                     "captions": [f"a test tone ({track_id})"], "tags": [], "licence": "CC0-1.0"})
    return rows


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("upload_path")
    raw, clips = root / "raw", root / "clips"
    listing = str(root / "listing")
    download_shard(plan(["synthetic"], {}, 3, 3, 11, listing)[0], listing, str(raw))
    with open(raw / layout.MANIFEST, "a") as manifest:
        for row in _user_tracks(raw):
            manifest.write(json.dumps(row) + "\n")
    clip_shard(str(raw), str(clips), renderings_for(FAMILIES, "demo") + ["native"], CLIP_S, max_clips_per_track=2)
    summary = embed_shard(str(clips), str(root / "targets"), FAMILIES, "demo")
    tracks = {r["track_id"]: r for r in storage.read_jsonl(str(raw / layout.MANIFEST))}
    rows = storage.read_parquet(str(clips / layout.CLIPS)).to_pylist()
    return root, summary, tracks, rows


def _targets(out_dir) -> dict[str, np.ndarray]:
    table = storage.read_parquet(str(out_dir / layout.TARGETS))
    return dict(zip(table["clip_id"].to_pylist(), np.array(table["target"].to_pylist(), dtype=np.float32)))


def _segment(raw, track: dict, clip: dict) -> tuple[np.ndarray, int]:
    """The clip's samples of the raw track file, as soundfile (librosa's first choice) decodes it."""
    data, rate = sf.read(str(raw / track["path"]), dtype="float32", always_2d=True)
    return data[round(clip["start_s"] * rate) : round(clip["end_s"] * rate)], rate


def _as_stereo44k(segment: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """A 44.1 kHz stereo file of the segment: L = R for mono, soxr_hq for another rate."""
    stereo = np.concatenate([segment, segment], axis=1) if segment.shape[1] == 1 else segment
    if rate != 44100:
        stereo = librosa.resample(np.ascontiguousarray(stereo.T), orig_sr=rate, target_sr=44100, res_type="soxr_hq").T
    return stereo, 44100


def _write(path, data: np.ndarray, rate: int) -> str:
    sf.write(str(path), data, rate, subtype="FLOAT")  # float WAV: the samples exactly
    return str(path)


def test_every_clip_gets_a_target_in_every_family(demo_run):
    root, summary, tracks, rows = demo_run
    assert {r["track_id"] for r in rows} == set(tracks) and len(rows) == 2 * len(tracks)
    for family in FAMILIES:
        assert (summary[f"{family}_targets"], summary[f"{family}_rejected"]) == (len(rows), 0), family
    recorded = {f: storage.read_json(str(root / "targets" / f / layout.META))["clip_rendering"] for f in FAMILIES}
    assert recorded == {"muq": "mono24k", "mert": "mono24k", "music2latent": "stereo44k"}


@pytest.mark.parametrize("family", FAMILIES)
def test_targets_equal_embed_file_on_the_same_source_audio(demo_run, family, tmp_path):
    root, _, tracks, rows = demo_run
    cfg = load_family_config(family, "demo")
    embedder = build_embedder(cfg.audio)
    targets = _targets(root / "targets" / family)
    block, window_s = cfg.audio.window_dim, float(getattr(cfg.audio, "window_s", 0.0))
    several_windows = 0
    for k, clip in enumerate(rows):
        segment, rate = _segment(root / "raw", tracks[clip["track_id"]], clip)
        if cfg.audio.clip_rendering == "stereo44k":
            segment, rate = _as_stereo44k(segment, rate)
        want = embedder.embed_file(_write(tmp_path / f"{k}.wav", segment, rate)).numpy()
        got = targets[clip["clip_id"]]
        assert np.abs(got - want).max() <= TOLERANCE, (family, clip["clip_id"], np.abs(got - want).max())
        # The demo's scaled windows (2 s) make all three blocks [mean | robust | dmean] non-zero
        # for a clip longer than one window; one window (T = 1) has zero robust and dmean blocks.
        if clip["end_s"] - clip["start_s"] > window_s:
            several_windows += 1
            assert all(np.linalg.norm(got[b * block : (b + 1) * block]) > 1e-3 for b in range(3)), clip["clip_id"]
    assert several_windows >= len(rows) - 2


def test_m2l_native_rate_targets_are_navidromes_own_vectors(demo_run, tmp_path):
    """Music2Latent on the clip as decoded (its rate read as 44.1 kHz, its channels): the mono
    file gets no target, as in Navidrome; the 48 kHz file differs from its 44.1 kHz rendering."""
    root, _, tracks, rows = demo_run
    cfg = load_family_config("music2latent", "demo", NATIVE_M2L)
    out = root / "targets_native_m2l"
    meta = embed_clips([str(root / "clips")], str(out), cfg)
    assert (meta["clip_rendering"], meta["m2l_native_rate"]) == ("native", True)
    targets, default = _targets(out), _targets(root / "targets" / "music2latent")
    rejected = {r["item"]: r["reason"] for r in storage.read_jsonl(str(out / layout.REJECTED))}
    embedder = build_embedder(cfg.audio)
    for k, clip in enumerate(rows):
        clip_id = clip["clip_id"]
        if clip["track_id"] == "user-mono-32k":
            assert clip_id not in targets and "mono" in rejected[clip_id]
            continue
        segment, rate = _segment(root / "raw", tracks[clip["track_id"]], clip)
        want = embedder.embed_file(_write(tmp_path / f"{k}.wav", segment, rate)).numpy()
        assert np.abs(targets[clip_id] - want).max() <= TOLERANCE, clip_id
        gap = np.abs(targets[clip_id] - default[clip_id]).max()
        if rate == 44100:  # 44.1 kHz stereo (synthetic): the stereo44k rendering is the clip itself
            assert gap <= TOLERANCE, clip_id
        else:  # 48 kHz read as 44.1 kHz: another vector than the resampled file's
            assert gap > 1e-3, clip_id
    assert set(rejected) == {c["clip_id"] for c in rows if c["track_id"] == "user-mono-32k"}
