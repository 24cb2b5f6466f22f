"""MuQ-MuLan loading: its towers moved to mirrored locations, then the real ``muq`` model.

The first tests need no ``muq``. The rest build a tiny random-init instance of the real
``muq.MuQMuLan`` and run where ``muq`` imports: ``make test-all`` runs them in the
environment made by tools/muq-test-env.sh (muq needs transformers<5).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import torch

from musictext.audio.families.muq import muq_mulan_config
from musictext.config import load_family_config

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "mulan": {"sr": 24000}, "audio_model": {"name": "OpenMuQ/MuQ-large-msd-iter", "model_dim": 1024},
        "text_model": {"name": "xlm-roberta-base", "model_dim": 768},
    }))
    return path


def _tower(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_towers_are_moved_to_resolved_local_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICTEXT_CACHE", str(tmp_path / "cache"))
    ckpt = _checkpoint(tmp_path / "MuQ-MuLan-large")
    text = _tower(tmp_path / "mirror" / "xlm-roberta-base")
    bucket = fsspec.filesystem("memory")
    bucket.pipe("/models/MuQ-large-msd-iter/config.json", b"{}")
    config = muq_mulan_config(str(ckpt), {"audio_model": "memory://models/MuQ-large-msd-iter",
                                          "text_model": str(text)})
    audio = Path(config["audio_model"]["name"])
    # the bucket copy keeps its name, which is how muq picks the audio tower's class
    assert audio.name == "MuQ-large-msd-iter" and (audio / "config.json").is_file()
    assert audio.is_relative_to(tmp_path / "cache")
    assert config["text_model"]["name"] == str(text.resolve())
    assert config["audio_model"]["model_dim"] == 1024 and config["mulan"] == {"sr": 24000}
    assert muq_mulan_config(str(ckpt), {}) is None  # nothing moved: the checkpoint's own config


def test_tower_locations_misread_by_their_names_fail(tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"audio.towers.audio_model.*'muq'"):
        muq_mulan_config(str(ckpt), {"audio_model": str(_tower(tmp_path / "audio-tower"))})
    with pytest.raises(ValueError, match=r"audio.towers.text_model.*'xlm-roberta'"):
        muq_mulan_config(str(ckpt), {"text_model": str(_tower(tmp_path / "XLM-RoBERTa"))})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        muq_mulan_config(str(ckpt), {"text_model": str(tmp_path / "gone" / "xlm-roberta")})
    with pytest.raises(FileNotFoundError, match="config.json"):
        muq_mulan_config("OpenMuQ/MuQ-MuLan-large", {"text_model": str(tmp_path)})


def test_towers_belong_to_muq_only():
    with pytest.raises(ValueError, match="towers"):
        load_family_config("mert", "production", {"audio": {"towers": {"audio_model": "x"}}})
    with pytest.raises(ValueError, match="towers"):
        load_family_config("muq", "production", {"audio": {"towers": {"vision_model": "x"}}})


# ----------------------------------------------------------------- the real muq package
def _muq_or_skip():
    from tests.muq_tiny import import_muq

    try:
        return import_muq()
    except ImportError:
        pytest.skip("muq is not installed here; `make test-all` runs this in tools/muq-test-env.sh's venv")


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """A tiny real MuQ-MuLan whose towers were moved after it was saved (as on an offline
    cluster: the checkpoint names locations that do not exist there)."""
    _muq_or_skip()
    from tests.muq_tiny import build_tiny_muq_mulan

    root = tmp_path_factory.mktemp("muq")
    dirs = build_tiny_muq_mulan(root / "built")
    mirror = root / "mirror"
    for key in ("audio_model", "text_model"):
        shutil.move(dirs[key], mirror / dirs[key].name)
    return dirs["model"], {key: str(mirror / dirs[key].name) for key in ("audio_model", "text_model")}


def _cfg(model: Path, towers: dict, **audio):
    return load_family_config("muq", "production", {"audio": {"model": str(model), "towers": towers, **audio}})


@pytest.mark.slow
def test_real_muq_mulan_loads_offline_from_moved_towers(mirrored, monkeypatch):
    from musictext.audio import build_embedder
    from musictext.audio.features import cut_windows, enrich

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model_dir, towers = mirrored
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    emb = build_embedder(_cfg(model_dir, towers).audio, device="cpu")
    assert torch.equal(torch.rand(3), expected_draw)  # loading left the caller's RNG alone
    model = emb.model
    assert type(model).__module__.startswith("muq.") and not model.training
    assert emb.target_dim == 1536

    # 20 s: one zero-padded 120 s window, which MuQ-MuLan cuts into twelve 10 s clips.
    g = torch.Generator().manual_seed(0)
    tracks = [torch.randn(24000 * 20, generator=g) * 0.1, torch.randn(24000 * 133, generator=g) * 0.1]
    got = emb.embed_loaded(tracks)  # mono at 24 kHz: what load_file hands over
    assert got.shape == (2, 1536) and bool(torch.isfinite(got).all())
    with torch.inference_mode():
        for track, vec in zip(tracks, got):
            windows = cut_windows(track, 120 * 24000, 15 * 24000)
            latents = torch.cat([model(wavs=w[None]) for w in windows]).float().T  # [512, T]
            torch.testing.assert_close(vec, enrich(latents), atol=1e-5, rtol=0)
    assert len(cut_windows(tracks[1], 120 * 24000, 15 * 24000)) == 2  # 133 s: 0-120 and 13-133
    torch.testing.assert_close(emb.embed_audio_tensor(tracks[0], 24000), got[0], atol=1e-5, rtol=0)
    # 36 clips in one tower call (production) or in calls of 5: the same vectors
    by_five = build_embedder(_cfg(model_dir, towers, clips_per_call=5).audio, device="cpu")
    torch.testing.assert_close(by_five.embed_loaded(tracks), got, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_real_muq_mulan_embeds_a_file_as_the_upload_path(mirrored, tmp_path):
    """embed_file: librosa.load(file, sr=24000, mono=True), 120 s / 15 s windows, all windows in
    one ``model(wavs=...)`` call, enrichment -- here a 44.1 kHz stereo file of 130 s."""
    import librosa
    import numpy as np
    import soundfile as sf

    from musictext.audio import build_embedder
    from musictext.audio.features import cut_windows, enrich

    model_dir, towers = mirrored
    emb = build_embedder(_cfg(model_dir, towers).audio, device="cpu")
    g = np.random.default_rng(1)
    path = tmp_path / "song.wav"
    sf.write(path, (g.normal(size=(44100 * 130, 2)) * 0.1).astype(np.float32), 44100, subtype="PCM_16")
    y, _ = librosa.load(path, sr=24000, mono=True)
    windows = torch.stack(cut_windows(torch.from_numpy(y), 120 * 24000, 15 * 24000))
    assert len(windows) == 2
    with torch.inference_mode():
        want = enrich(emb.model(wavs=windows).float().T)
    torch.testing.assert_close(emb.embed_file(str(path)), want, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_without_moved_towers_the_load_fails_naming_the_missing_location(mirrored):
    model_dir, _ = mirrored
    code = (
        "import sys; from tests.muq_tiny import import_muq; import_muq()\n"
        "from musictext.audio import build_embedder\n"
        "from musictext.config import load_family_config\n"
        f"cfg = load_family_config('muq', 'production', {{'audio': {{'model': {str(model_dir)!r}}}}})\n"
        "build_embedder(cfg.audio, device='cpu')\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'python'}",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode != 0
    assert "MuQ-tiny" in proc.stderr  # the tower location recorded in the checkpoint's config
