"""``embed_file`` is the vector Navidrome's upload path stores for a file.

The reference here is written from navidrome-contract.md ("What is actually stored: the upload
path"), independently of musictext.audio: soundfile + librosa to load, its own windows and
enrichment in numpy, and each model through ``embedder.model`` / ``embedder.processor`` with the
upstream call signatures (MuQ-MuLan: all windows in one ``model(wavs=...)``; MERT: one
``processor`` + ``model`` call per window; Music2Latent: ``model.encode(path,
max_waveform_length=441000)`` on the file, then to_R128 and magnitudes). Production window
sizes with small random-init models keep it fast.
"""

from __future__ import annotations

import math

import fsspec
import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from musictext.audio import build_embedder
from musictext.audio.families.music2latent import MONO_REASON, MULTICHANNEL_REASON
from musictext.config import load_family_config
from musictext.rejects import ItemError

torch.set_num_threads(2)

TOL = 1e-5
MODEL_RATE = 24000
M2L_MAX_WAVEFORM = 44100 * 10  # what the sidecar passes to encode
# Production windows and MuLan's 10 s clips, on the demo's small random-init models.
PRODUCTION_WINDOWS = {
    "muq": {"window_s": 120, "hop_s": 15, "batch_windows": 4,
            "random_init_arch": {"n_mels": 64, "hidden": 128, "clip_secs": 10}},
    "mert": {"window_s": 30, "hop_s": 5, "batch_windows": 8, "num_hidden_layers": 2, "hidden_size": 32,
             "random_init_arch": {"intermediate_size": 64, "num_attention_heads": 2, "conv_channels": 32}},
    "music2latent": {"batch_windows": 2},
}
FAMILIES = tuple(PRODUCTION_WINDOWS)
# 134 s: MuQ-MuLan windows at 0 and 14 s (the second end-aligned), MERT 21 + 1 windows.
LONG_S = 134.0


# ----------------------------------------------------------------- generated files
def _signal(secs: float, rate: int, f0: float, bpm: float, seed: int) -> np.ndarray:
    """A decaying harmonic note train with a little noise."""
    t = np.arange(int(round(secs * rate))) / rate
    x = sum(np.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 7) if f0 * k < rate / 2)
    env = (1 - (t * bpm / 60) % 1) ** 2
    noise = np.random.default_rng(seed).normal(scale=0.01, size=t.shape)
    return (0.25 * x * env + noise).astype(np.float32)


def _channels(secs: float, rate: int, n: int, seed: int) -> np.ndarray:
    """[samples, n]: every channel a different note and tempo."""
    notes = [(220.0, 120.0), (330.0, 95.0), (147.0, 140.0)]
    return np.stack([_signal(secs, rate, *notes[c], seed=seed + c) for c in range(n)], axis=1)


FILES = {
    # name: (seconds, rate, channels, container, subtype)
    "stereo44_wav": (8.0, 44100, 2, "WAV", "PCM_16"),
    "stereo44_wav_b": (8.0, 44100, 2, "WAV", "FLOAT"),  # same length: shares model calls
    "stereo48_flac": (8.0, 48000, 2, "FLAC", "PCM_24"),
    "mono24_wav": (8.0, 24000, 1, "WAV", "PCM_16"),
    "mp3": (8.0, 44100, 2, "MP3", "MPEG_LAYER_III"),
    "short3s": (3.0, 44100, 2, "WAV", "PCM_16"),
    "long": (LONG_S, 44100, 2, "FLAC", "PCM_16"),
    "three_ch": (5.0, 44100, 3, "WAV", "PCM_16"),
}
HAS_MP3 = "MP3" in sf.available_formats()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("upload")
    out = {}
    for seed, (name, (secs, rate, channels, container, subtype)) in enumerate(FILES.items()):
        if container == "MP3" and not HAS_MP3:
            continue
        ext = {"WAV": "wav", "FLAC": "flac", "MP3": "mp3"}[container]
        path = root / f"{name}.{ext}"
        sf.write(path, _channels(secs, rate, channels, seed * 10), rate, format=container, subtype=subtype)
        out[name] = str(path)
    return out


def cfg_for(family: str, **audio):
    return load_family_config(family, "demo", {"audio": {**PRODUCTION_WINDOWS[family], **audio}}).audio


@pytest.fixture(scope="module")
def embedders():
    return {family: build_embedder(cfg_for(family), device="cpu") for family in FAMILIES}


@pytest.fixture(scope="module")
def embed_file(embedders):
    """(family, path) -> embedders[family].embed_file(path), computed once per module."""
    done: dict[tuple[str, str], torch.Tensor] = {}

    def get(family: str, path: str) -> torch.Tensor:
        if (family, path) not in done:
            done[(family, path)] = embedders[family].embed_file(path)
        return done[(family, path)]

    return get


# ----------------------------------------------------------------- the reference
def ref_window_starts(total: int, chunk: int, hop: int) -> list[int]:
    """range(0, max(total - chunk, 0) + 1, hop), plus max(total - chunk, 0) when the last
    window stops short of the end (or there is none)."""
    starts = list(range(0, max(total - chunk, 0) + 1, hop))
    if not starts or starts[-1] + chunk < total:
        starts.append(max(total - chunk, 0))
    return starts


def ref_windows(y: np.ndarray, window_s: float, hop_s: float) -> list[np.ndarray]:
    chunk, hop = int(window_s * MODEL_RATE), int(hop_s * MODEL_RATE)
    out = []
    for start in ref_window_starts(len(y), chunk, hop):
        piece = y[start : start + chunk]
        out.append(np.pad(piece, (0, chunk - len(piece))))  # a short window is zero-padded
    return out


def ref_enrich(x: np.ndarray) -> np.ndarray:
    """[D, T] -> [mean | (q75 - q25) / 1.349 | mean signed difference], one global L2 norm."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=1)
    q25, q75 = np.quantile(x, [0.25, 0.75], axis=1)  # linear interpolation, as torch.quantile
    robust = (q75 - q25) / 1.3489795003921634
    dmean = np.diff(x, axis=1).mean(axis=1) if x.shape[1] >= 2 else np.zeros_like(mean)
    vec = np.concatenate([mean, robust, dmean])
    return vec / np.linalg.norm(vec)


def upload_load(path: str) -> np.ndarray:
    y, sr = librosa.load(path, sr=MODEL_RATE, mono=True)
    assert sr == MODEL_RATE
    return y


@torch.no_grad()
def ref_muq(emb, path: str, y: np.ndarray | None = None) -> np.ndarray:
    y = upload_load(path) if y is None else y
    wins = torch.from_numpy(np.stack(ref_windows(y, emb.cfg.window_s, emb.cfg.hop_s)))
    out = emb.model(wavs=wins)  # all windows in one call -> [T, 512]
    return ref_enrich(out.float().numpy().T)


@torch.no_grad()
def ref_mert(emb, path: str) -> np.ndarray:
    columns = []
    for chunk in ref_windows(upload_load(path), emb.cfg.window_s, emb.cfg.hop_s):
        inputs = emb.processor(chunk, sampling_rate=MODEL_RATE, return_tensors="pt")
        out = emb.model(**inputs, output_hidden_states=True)
        per_layer = [h[0].float().mean(dim=0).numpy() for h in out.hidden_states]  # mean over frames
        columns.append(np.concatenate(per_layer))  # layer-major
    return ref_enrich(np.stack(columns, axis=1))


def ref_music2latent(emb, path: str) -> np.ndarray:
    latent = np.asarray(emb.model.encode(path, max_waveform_length=M2L_MAX_WAVEFORM), dtype=np.float64)
    # add_magnitude_channels: x[0] real, x[1] imaginary (IndexError for a mono file)
    re, im = latent[0], latent[1]
    if latent.shape[0] != 2:  # to_R128: x.permute(1, 0, 2).reshape(128, T) fails
        raise ValueError(f"cannot reshape a {latent.shape[0]}-channel latent to 128 rows")
    frames = re.shape[-1]
    r128 = np.stack([re, im], axis=1).reshape(2 * re.shape[0], frames)  # re_0, im_0, re_1, ...
    mag = np.sqrt(re**2 + im**2 + 1e-12)
    return ref_enrich(np.concatenate([r128, mag]))


REFERENCE = {"muq": ref_muq, "mert": ref_mert, "music2latent": ref_music2latent}
M2L_REFUSED = {"mono24_wav": (IndexError, MONO_REASON), "three_ch": (ValueError, MULTICHANNEL_REASON)}


def _file_or_skip(files, name):
    if name not in files:
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) does not write {name}")
    return files[name]


# ----------------------------------------------------------------- embed_file == reference
@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("family", FAMILIES)
def test_embed_file_equals_the_upload_path(embedders, embed_file, files, family, name):
    path = _file_or_skip(files, name)
    emb = embedders[family]
    if family == "music2latent" and name in M2L_REFUSED:
        error, reason = M2L_REFUSED[name]
        with pytest.raises(error):  # Navidrome's upload path fails: it stores nothing
            ref_music2latent(emb, path)
        with pytest.raises(ItemError) as err:
            emb.embed_file(path)
        assert reason in err.value.reason and err.value.item == path
        return
    got = embed_file(family, path)
    assert got.dtype == torch.float32 and got.shape == (emb.target_dim,)
    np.testing.assert_allclose(got.numpy(), REFERENCE[family](emb, path), atol=TOL, rtol=0)


def test_the_files_exercise_the_window_rules(files):
    """The long file gives several MERT windows and two MuQ-MuLan windows (the last one
    end-aligned); the 3 s clip is shorter than any window."""
    long_y, short_y = upload_load(files["long"]), upload_load(files["short3s"])
    assert len(ref_window_starts(len(long_y), 120 * MODEL_RATE, 15 * MODEL_RATE)) == 2
    assert len(ref_window_starts(len(long_y), 30 * MODEL_RATE, 5 * MODEL_RATE)) == 22
    assert len(ref_window_starts(len(short_y), 30 * MODEL_RATE, 5 * MODEL_RATE)) == 1


@pytest.mark.parametrize("family", ["muq", "mert"])
def test_a_clip_shorter_than_a_window_has_zero_robust_and_dmean_blocks(embedders, files, family):
    emb = embedders[family]
    vec = emb.embed_file(files["short3s"])
    d = emb.window_dim
    assert torch.count_nonzero(vec[d:]) == 0 and torch.count_nonzero(vec[:d]) > 0


def test_stereo_channels_are_music2latents_real_and_imaginary_parts(embedders, files):
    """Left and right become re and im: swapping the channels swaps every (re, im) row pair
    of each block and keeps the magnitude rows."""
    emb = embedders["music2latent"]
    left_right, _ = sf.read(files["stereo44_wav"], dtype="float32", always_2d=True)
    swapped = files["stereo44_wav"].replace(".wav", "_swapped.wav")
    sf.write(swapped, left_right[:, ::-1], 44100, subtype="PCM_16")
    a = emb.embed_file(files["stereo44_wav"]).reshape(3, emb.window_dim)
    b = emb.embed_file(swapped).reshape(3, emb.window_dim)
    pairs_a, pairs_b = a[:, :128].reshape(3, 64, 2), b[:, :128].reshape(3, 64, 2)
    assert not torch.allclose(pairs_a, pairs_b, atol=1e-3)  # L's latent is not R's
    torch.testing.assert_close(pairs_b, pairs_a.flip(-1), atol=TOL, rtol=0)
    torch.testing.assert_close(b[:, 128:], a[:, 128:], atol=TOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_embed_loaded_on_a_batch_equals_embed_file(embedders, embed_file, files, family):
    emb = embedders[family]
    names = [n for n in files if not (family == "music2latent" and n in M2L_REFUSED)]
    batch = emb.embed_loaded([emb.load_file(files[n]) for n in names])
    assert batch.shape == (len(names), emb.target_dim)
    for row, name in zip(batch, names):
        torch.testing.assert_close(row, embed_file(family, files[name]), atol=TOL, rtol=0, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bucket_file_embeds_like_the_local_file(embedders, files, family):
    mem = fsspec.filesystem("memory")
    mem.put(files["stereo48_flac"], "/upload-bucket/song.flac")
    emb = embedders[family]
    torch.testing.assert_close(emb.embed_file("memory://upload-bucket/song.flac"),
                               emb.embed_file(files["stereo48_flac"]), atol=0, rtol=0)


def test_muq_torchaudio_loader(files):
    """MuQ-MuLan's older loader: torchaudio.load (soundfile decodes the same float32 samples),
    channel mean, torchaudio.functional.resample with default arguments (torchaudio is not
    installed here: musictext.audio.resample is its kernel, checked against it elsewhere)."""
    from musictext.audio.resample import resample

    emb = build_embedder(cfg_for("muq", loader="torchaudio"), device="cpu")
    librosa_emb = build_embedder(cfg_for("muq"), device="cpu")
    for name in ("stereo48_flac", "mono24_wav", "long"):
        data, rate = sf.read(files[name], dtype="float32", always_2d=True)
        mono = torch.from_numpy(data.T.copy()).mean(dim=0)
        y = resample(mono, rate, MODEL_RATE).numpy()
        np.testing.assert_allclose(emb.embed_file(files[name]).numpy(), ref_muq(emb, files[name], y),
                                   atol=TOL, rtol=0, err_msg=name)
    # The loaders differ for a file that needs resampling, and agree for one that does not.
    flac, mono24 = files["stereo48_flac"], files["mono24_wav"]
    assert not torch.allclose(emb.embed_file(flac), librosa_emb.embed_file(flac), atol=1e-6)
    torch.testing.assert_close(emb.embed_file(mono24), librosa_emb.embed_file(mono24), atol=TOL, rtol=0)


# ----------------------------------------------------------------- Music2Latent's encode
def test_music2latent_stand_in_encode_has_the_package_semantics(embedders, files, monkeypatch):
    """The package's own encode_audio_inference (crop, chunks filled with the track's beginning,
    channels and chunks as one batch, max_batch_size, joined back and trimmed), run with the
    stand-in's representation and encoder, gives exactly the stand-in's encode."""
    import music2latent.inference as m2l

    model = embedders["music2latent"].model
    monkeypatch.setattr(m2l, "to_representation_encoder", lambda audio: model.frontend(audio)[:, None])

    class Gen(torch.nn.Module):
        def encoder(self, representation, extract_features=False):
            return model.encoder(representation[:, 0], extract_features)

    trainer = type("Trainer", (), {"gen": Gen()})()
    audio, _ = sf.read(files["long"], dtype="float32", always_2d=True)
    audio = torch.from_numpy(audio.T.copy())
    for max_length, max_batch, features in ((M2L_MAX_WAVEFORM, 3, False), (44100 * 7, 1, True), (10**8, 2, False)):
        want = m2l.encode_audio_inference(audio, trainer, max_length, max_batch, device="cpu",
                                          extract_features=features)
        if not features:
            want = want * m2l.sigma_rescale  # the package's latent scale; the stand-in has none
        got = model.encode(audio, max_waveform_length=max_length, max_batch_size=max_batch,
                           extract_features=features)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # A path reads as soundfile.read(path, dtype="float32", always_2d=True): every channel.
    torch.testing.assert_close(model.encode(files["long"], max_waveform_length=M2L_MAX_WAVEFORM),
                               model.encode(audio, max_waveform_length=M2L_MAX_WAVEFORM), atol=0, rtol=0)
    assert model.encode(files["three_ch"]).shape[:2] == (3, 64)
    assert model.encode(files["mono24_wav"]).shape[:2] == (1, 64)


def test_real_music2latent_unet_through_the_package_encode(tmp_path, real_music2latent):
    """The real UNet (random weights) loaded from our checkpoint, never music2latent's own
    download: embed_file equals the reference through the package's EncoderDecoder.encode."""
    import music2latent.inference as m2l_inference

    emb, _ = real_music2latent
    assert isinstance(emb.model, m2l_inference.EncoderDecoder)
    path = tmp_path / "short.wav"
    sf.write(path, _channels(0.25, 44100, 2, seed=5), 44100, subtype="PCM_16")  # 2 latent frames
    got = emb.embed_file(str(path))
    assert got.shape == (576,)
    np.testing.assert_allclose(got.numpy(), ref_music2latent(emb, str(path)), atol=TOL, rtol=0)


# ----------------------------------------------------------------- the demo profile
@pytest.mark.parametrize("family", FAMILIES)
def test_demo_windows_give_all_three_blocks_on_a_demo_clip(family, tmp_path):
    """A 6 s demo clip: at least two windows/frames, so every block of the target is non-zero."""
    emb = build_embedder(load_family_config(family, "demo").audio, device="cpu")
    if family == "music2latent":
        assert emb.window_dim == 3 * 64  # the real latent width
    path = tmp_path / "clip.wav"
    sf.write(path, _channels(6.0, 44100, 2, seed=3), 44100, subtype="FLOAT")
    vec = emb.embed_file(str(path))
    d = emb.window_dim
    norms = [float(vec[k * d : (k + 1) * d].norm()) for k in range(3)]
    assert all(n > 1e-3 for n in norms), norms
    np.testing.assert_allclose(vec.numpy(), REFERENCE[family](emb, str(path)), atol=TOL, rtol=0)
