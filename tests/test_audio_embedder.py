"""One embedder code path, three families: batching, determinism, informativeness, loaders."""

from __future__ import annotations

import importlib.util
import math

import fsspec
import pytest
import torch

from musictext.audio import build_embedder, enrich, music2latent_features
from musictext.audio.families.music2latent import (
    load_music2latent,
    m2l_checkpoint_path,
    save_music2latent_checkpoint,
)
from musictext.config import FAMILIES, load_family_config

torch.set_num_threads(1)

# Short windows keep the batching tests fast; the code path is the production one.
FAST = {
    "muq": {"audio": {"window_s": 3, "hop_s": 1, "batch_windows": 3}},
    "mert": {"audio": {"window_s": 1, "hop_s": 0.5, "batch_windows": 3}},
    "music2latent": {"audio": {"batch_windows": 2}},
}


def synth(kind: str, f0: float, sr: int, secs: float, amp: float = 0.3, bpm: float = 120.0) -> torch.Tensor:
    """Deterministic test tones: sine/saw/square/noise with a decaying note envelope at ``bpm``."""
    t = torch.arange(int(secs * sr), dtype=torch.float64) / sr
    if kind == "sine":
        x = torch.sin(2 * math.pi * f0 * t)
    elif kind == "saw":
        x = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 16) if f0 * k < sr / 2)
    elif kind == "square":
        x = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 16, 2) if f0 * k < sr / 2)
    elif kind == "noise":
        x = torch.randn(len(t), generator=torch.Generator().manual_seed(int(f0)), dtype=torch.float64)
    else:
        raise ValueError(kind)
    env = (1 - (t * bpm / 60) % 1) ** 3
    return (amp * x * env).float()


def cfg_for(family: str, extra: dict | None = None):
    over = dict(FAST[family])
    if extra:
        over = {"audio": {**over["audio"], **extra.get("audio", {})}}
    return load_family_config(family, "demo", over).audio


@pytest.fixture(scope="module")
def embedders():
    return {f: build_embedder(cfg_for(f), device="cpu") for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_unbatched(embedders, family):
    emb = embedders[family]
    sr = emb.sample_rate
    items = [
        (synth("saw", 220, sr, 2.3), sr),  # several windows
        (torch.stack([synth("sine", 660, 22050, 1.2), synth("square", 110, 22050, 1.2)]), 22050),
        (synth("noise", 3, sr, 0.7, amp=0.1), sr),  # shorter than one window
        (synth("square", 330, sr, 3.0, bpm=90), sr),
    ]
    batched = emb.embed_batch(items)
    assert batched.shape == (4, emb.target_dim) and batched.dtype == torch.float32
    for i, (w, rate) in enumerate(items):
        single = emb.embed_audio_tensor(w, rate)
        assert single.shape == (emb.target_dim,)
        assert torch.allclose(batched[i], single, atol=1e-5), (family, i)
        assert float(single.norm()) == pytest.approx(1.0, abs=1e-5)


def test_windowed_target_is_enrichment_of_per_window_vectors(embedders):
    """The embedder's vector equals enrich() of the model's per-window outputs, by hand."""
    emb = embedders["muq"]
    sr = emb.sample_rate
    x = synth("saw", 196, sr, 4.5)
    chunk, hop = 3 * sr, 1 * sr
    # range(0, 1.5 s + 1, 1 s) -> 0, 1 s; then the end-aligned window at 1.5 s.
    starts = [0, sr, len(x) - chunk]
    with torch.no_grad():
        wins = torch.stack([x[s : s + chunk] for s in starts])
        per_window = emb.model(wavs=wins)  # [T, D]
    want = enrich(per_window.T)
    assert torch.allclose(emb.embed_audio_tensor(x, sr), want, atol=1e-6)
    assert hop == sr
    # A clip shorter than a window: T = 1, robust and dmean blocks exactly zero.
    short = emb.embed_audio_tensor(x[: sr], sr)
    d = emb.window_dim
    assert torch.count_nonzero(short[d:]) == 0 and torch.count_nonzero(short[:d]) > 0


def test_mert_hidden_state_layout_with_24_layers():
    cfg = cfg_for(
        "mert",
        {"audio": {"num_hidden_layers": 24, "hidden_size": 16,
                   "random_init_arch": {"intermediate_size": 32, "num_attention_heads": 2, "conv_channels": 16}}},
    )
    emb = build_embedder(cfg, device="cpu")
    assert emb.window_dim == 25 * 16 and emb.target_dim == 3 * 25 * 16
    sr = emb.sample_rate
    window = synth("saw", 300, sr, 1.0)
    # Reference: one window per forward through processor and model, by hand.
    proc, model = emb.processor, emb.model
    with torch.no_grad():
        inputs = proc(window.numpy(), sampling_rate=sr, return_tensors="pt")
        out = model(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == 25
    want = torch.cat([h[0].float().mean(0) for h in out.hidden_states])  # layer-major
    with torch.no_grad():
        got = emb.adapter.run(window[None])
    assert got[0].shape == (400, 1)
    assert torch.allclose(got[0][:, 0], want, atol=1e-5)
    vec = emb.embed_audio_tensor(window, sr)
    assert vec.shape == (1200,)


def test_demo_mert_processor_has_the_published_settings():
    """MERT-v1-330M's preprocessor_config.json (huggingface.co/m-a-p/MERT-v1-330M, commit
    d0726b6): windows reach the model as they are, not normalised to zero mean, unit variance."""
    published = {"do_normalize": False, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                 "padding_side": "right", "padding_value": 0, "return_attention_mask": True,
                 "sampling_rate": 24000}
    emb = build_embedder(load_family_config("mert", "demo").audio, device="cpu")
    settings = emb.processor.to_dict()
    assert {key: settings[key] for key in published} == published
    window = synth("saw", 220, 24000, 0.5, amp=0.05)
    inputs = emb.processor(window.numpy(), sampling_rate=24000, return_tensors="pt")
    assert torch.equal(inputs["input_values"][0], window) and bool(inputs["attention_mask"].all())


@pytest.mark.parametrize("family", FAMILIES)
def test_random_init_is_deterministic(family):
    cfg = cfg_for(family)
    a, b = build_embedder(cfg, device="cpu"), build_embedder(cfg, device="cpu")
    sa = a.model.state_dict()
    sb = b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = synth("square", 247, cfg.sample_rate, 1.5)
    assert torch.equal(a.embed_audio_tensor(x, cfg.sample_rate), b.embed_audio_tensor(x, cfg.sample_rate))
    torch.manual_seed(123)  # the global RNG does not leak into the weights
    c = build_embedder(cfg, device="cpu").model.state_dict()
    assert all(torch.equal(sa[k], c[k]) for k in sa)


SIGNALS = [
    ("sine", 220, 0.3, 120),
    ("sine", 880, 0.3, 120),
    ("saw", 220, 0.3, 120),
    ("square", 110, 0.08, 90),
    ("noise", 1, 0.2, 150),
    ("saw", 440, 0.05, 60),
]


def spread(vectors: torch.Tensor) -> dict:
    cos = vectors @ vectors.T
    off = cos[~torch.eye(len(vectors), dtype=torch.bool)]
    return {"min": float(off.min()), "mean": float(off.mean()), "max": float(off.max())}


@pytest.mark.parametrize("family", FAMILIES)
def test_demo_targets_are_informative(family):
    """With the real demo config (demo windows), different sounds give different targets."""
    cfg = load_family_config(family, "demo").audio
    emb = build_embedder(cfg, device="cpu")
    sr = cfg.sample_rate
    vecs = emb.embed_batch([(synth(k, f, sr, 4.0, a, b), sr) for k, f, a, b in SIGNALS])
    s = spread(vecs)
    print(f"{family}: off-diagonal cosine {s}")
    assert s["min"] < 0.9 and s["max"] < 0.999 and s["max"] - s["min"] > 0.1, s


def test_autocast_bf16_stays_close_to_float32():
    cfg = cfg_for("muq")
    ref = build_embedder(cfg, device="cpu")
    fast = build_embedder(cfg.model_copy(update={"autocast": "bf16"}), device="cpu")
    x = synth("saw", 150, cfg.sample_rate, 2.0)
    a, b = ref.embed_audio_tensor(x, cfg.sample_rate), fast.embed_audio_tensor(x, cfg.sample_rate)
    assert b.dtype == torch.float32
    assert float(a @ b) > 0.99


# ----------------------------------------------------------------- loaders
def test_mert_loads_from_directory_file_uri_and_bucket_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICTEXT_CACHE", str(tmp_path / "cache"))
    cfg = cfg_for("mert")
    built = build_embedder(cfg, device="cpu")
    saved = tmp_path / "mert-tiny"
    built.model.save_pretrained(saved)
    built.processor.save_pretrained(saved)
    mem = fsspec.filesystem("memory")
    mem.put(str(saved), "/models/mert-tiny", recursive=True)
    x = synth("saw", 220, cfg.sample_rate, 1.7)
    want = built.embed_audio_tensor(x, cfg.sample_rate)
    for ref in (str(saved), f"file://{saved}", "memory://models/mert-tiny"):
        loaded = build_embedder(cfg.model_copy(update={"random_init": False, "model": ref}), device="cpu")
        assert torch.allclose(loaded.embed_audio_tensor(x, cfg.sample_rate), want, atol=1e-6), ref
    wrong = cfg.model_copy(update={"random_init": False, "model": str(saved), "num_hidden_layers": 5})
    with pytest.raises(ValueError, match="layers"):
        build_embedder(wrong, device="cpu")
    with pytest.raises(FileNotFoundError):
        build_embedder(cfg.model_copy(update={"random_init": False, "model": str(tmp_path / "nope")}))


def test_sample_rate_mismatch_is_reported(tmp_path):
    cfg = cfg_for("mert")
    built = build_embedder(cfg, device="cpu")
    built.model.save_pretrained(tmp_path)
    built.processor.save_pretrained(tmp_path)
    bad = cfg.model_copy(update={"random_init": False, "model": str(tmp_path), "sample_rate": 16000})
    with pytest.raises(ValueError, match="24000 Hz"):
        build_embedder(bad, device="cpu")


def test_music2latent_checkpoint_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICTEXT_CACHE", str(tmp_path / "cache"))
    ckpt_dir = tmp_path / "m2l"
    ckpt_dir.mkdir()
    (ckpt_dir / "music2latent.pt").write_bytes(b"x")
    assert m2l_checkpoint_path(str(ckpt_dir)) == str(ckpt_dir / "music2latent.pt")
    assert m2l_checkpoint_path(f"file://{ckpt_dir}/music2latent.pt") == str(ckpt_dir / "music2latent.pt")
    fsspec.filesystem("memory").put(str(ckpt_dir), "/buckets/m2l", recursive=True)
    mirrored = m2l_checkpoint_path("memory://buckets/m2l")
    assert open(mirrored, "rb").read() == b"x"
    with pytest.raises(FileNotFoundError):
        m2l_checkpoint_path(str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError):
        m2l_checkpoint_path(str(tmp_path))  # a directory without the checkpoint


def test_music2latent_real_unet_loads_without_download(real_music2latent, tmp_path):
    """The real UNet (random weights) through our loader and music2latent's own encode()."""
    emb, gen = real_music2latent
    loaded_state = emb.model.gen.state_dict()
    assert all(torch.equal(loaded_state[k], v) for k, v in gen.state_dict().items())
    x = synth("saw", 220, 44100, 0.2)  # 0.2 s -> one latent frame: cheap on CPU
    vec = emb.embed_audio_tensor(x, 44100)
    assert vec.shape == (576,) and bool(torch.isfinite(vec).all())
    latent = emb.model.encode(x[None], max_waveform_length=441000)
    assert latent.shape == (1, 64, 1)
    # T = 1: robust and dmean blocks zero; the 64 imaginary rows of the mean block are zero too.
    assert torch.count_nonzero(vec[192:]) == 0
    assert torch.count_nonzero(vec[1:128:2]) == 0
    # A checkpoint that is not Music2Latent's is refused by name.
    bad = tmp_path / "bad.pt"
    torch.save({"gen_state_dict": {"decoder.x": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="not a Music2Latent checkpoint"):
        load_music2latent(str(bad), torch.device("cpu"))


@pytest.mark.slow
def test_music2latent_real_unet_ten_seconds_batched(tmp_path):
    from music2latent.models import UNet

    torch.set_num_threads(2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        gen = UNet()
    save_music2latent_checkpoint(gen, tmp_path)
    cfg = load_family_config("music2latent", "production", {"audio": {"model": str(tmp_path)}}).audio
    emb = build_embedder(cfg, device="cpu")
    a, b = synth("saw", 220, 44100, 10.0), synth("noise", 2, 44100, 10.0, 0.1)
    latent = emb.model.encode(a[None], max_waveform_length=441000)
    assert latent.shape == (1, 64, 107)  # ~10.7 frames/s
    unbatched = enrich(music2latent_features(latent))
    batched = emb.embed_batch([(a, 44100), (b, 44100)])  # both tracks in one encode call
    assert torch.allclose(batched[0], unbatched, atol=1e-4)
    assert float(batched[0] @ batched[1]) < 0.999


@pytest.mark.skipif(importlib.util.find_spec("muq") is not None, reason="muq installed: real loading path")
def test_muq_real_loading_needs_its_own_environment():
    cfg = load_family_config("muq", "production").audio
    with pytest.raises(ImportError, match="requirements/audio.txt"):
        build_embedder(cfg, device="cpu")
