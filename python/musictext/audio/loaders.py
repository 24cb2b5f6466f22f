"""Load the real audio models by hub id, local directory or bucket URI, or build a seeded
random-init stand-in of the same interface (``audio_cfg.random_init``).

Each loader returns a ``Loaded`` bundle: the model (eval mode, on ``device``), an optional
preprocessor (MERT's feature extractor) and the sample rate the model consumes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from musictext import storage
from musictext.config import AudioConfig
from musictext.hub import is_remote, mirror_remote, resolve_pretrained

log = logging.getLogger(__name__)

M2L_CHECKPOINT = "music2latent.pt"


@dataclass
class Loaded:
    model: Any
    processor: Any = None
    sample_rate: int = 0


def load_model(cfg: AudioConfig, device: torch.device) -> Loaded:
    loader = {"muq_mulan": _load_muq, "mert": _load_mert, "music2latent": _load_m2l}[cfg.kind]
    loaded = loader(cfg, device)
    if int(loaded.sample_rate) != int(cfg.sample_rate):
        raise ValueError(
            f"{cfg.model}: the model consumes {loaded.sample_rate} Hz but the audio config says "
            f"sample_rate={cfg.sample_rate}; fix configs/ so clips are rendered at the model rate"
        )
    return loaded


# ---------------------------------------------------------------- MuQ-MuLan
def _load_muq(cfg: AudioConfig, device: torch.device) -> Loaded:
    from musictext.audio.tiny import TinyMuLan, init_seed

    if cfg.random_init:
        arch = dict(cfg.random_init_arch)
        model = TinyMuLan(
            cfg.sample_rate,
            int(cfg.embed_dim),
            n_mels=int(arch.get("n_mels", 64)),
            hidden=int(arch.get("hidden", 128)),
            clip_secs=int(arch.get("clip_secs", 10)),
            seed=init_seed(cfg.kind, arch),
        )
        return Loaded(model.to(device).eval(), None, cfg.sample_rate)
    try:
        from muq import MuQMuLan  # lives in the MuQ step's own image (requirements/audio.txt)
    except ImportError as err:
        raise ImportError(
            "MuQ-MuLan needs the `muq` package (transformers<5, torchaudio, x_clip); run this step "
            "in the audio image built from requirements/audio.txt"
        ) from err
    where = resolve_pretrained(cfg.model)
    config = muq_mulan_config(where, cfg.towers)
    # Building MuQ reseeds torch's global RNG (its random quantizer); keep that local.
    with torch.random.fork_rng(devices=[]):
        model = MuQMuLan.from_pretrained(where, **({"config": config} if config else {}))
    model = model.to(device).eval()  # from_pretrained leaves safetensors models in train mode
    sr = int(getattr(model, "sr", cfg.sample_rate))
    return Loaded(model, None, sr)


# muq chooses each tower's class from its name: "muq" (any case) for the audio tower,
# "xlm-roberta" for the text tower.
MUQ_TOWER_NAMES = {"audio_model": ("muq", str.lower), "text_model": ("xlm-roberta", str)}


def muq_mulan_config(model_dir: str, towers: dict[str, str]) -> dict | None:
    """The checkpoint's config.json with its towers moved to ``towers`` (resolved to local
    directories), or None when no tower is moved.

    MuQMuLan.from_pretrained first builds both towers from the names in its config (hub ids:
    a download) and only then loads its own weights over them, so offline both must be local.
    """
    if not towers:
        return None
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"audio.towers needs the MuQ-MuLan checkpoint as a directory or bucket URI with a "
            f"config.json; {model_dir} has none"
        )
    config = json.loads(config_path.read_text())
    for key, ref in towers.items():
        where = resolve_pretrained(ref)
        needle, fold = MUQ_TOWER_NAMES[key]
        if needle not in fold(where):
            raise ValueError(
                f"audio.towers.{key}: muq picks this tower's class by name, so its location must "
                f"contain {needle!r}; {ref} resolves to {where}"
            )
        config[key]["name"] = where
    return config


# ---------------------------------------------------------------- MERT
def _load_mert(cfg: AudioConfig, device: torch.device) -> Loaded:
    if cfg.random_init:
        from musictext.audio.tiny import init_seed, tiny_mert

        model, processor = tiny_mert(
            cfg.sample_rate,
            int(cfg.num_hidden_layers),
            int(cfg.hidden_size),
            dict(cfg.random_init_arch),
            init_seed(cfg.kind, cfg.random_init_arch),
        )
    else:
        from transformers import AutoModel, Wav2Vec2FeatureExtractor

        ref = resolve_pretrained(cfg.model)
        model = AutoModel.from_pretrained(ref, trust_remote_code=True)
        processor = Wav2Vec2FeatureExtractor.from_pretrained(ref)
        got = (int(model.config.num_hidden_layers), int(model.config.hidden_size))
        want = (int(cfg.num_hidden_layers), int(cfg.hidden_size))
        if got != want:
            raise ValueError(
                f"{cfg.model}: model has (layers, hidden) = {got} but the config says {want}"
            )
    return Loaded(model.to(device).eval(), processor, int(processor.sampling_rate))


# ---------------------------------------------------------------- Music2Latent
def m2l_checkpoint_path(ref: str) -> str:
    """A local checkpoint file for a Music2Latent reference.

    ``ref`` is a ``.pt`` file or a directory holding ``music2latent.pt`` (local, file:// or a
    bucket URI mirrored through fsspec), or a hub repo id (downloaded through huggingface_hub,
    which honours HF_HOME / HF_HUB_OFFLINE) -- never music2latent's own download into
    site-packages.
    """
    ref = storage.local_path(ref)
    if is_remote(ref):
        local = mirror_remote(ref)
        candidates = [local / M2L_CHECKPOINT, local / Path(ref.rstrip("/")).name]
        for cand in candidates:
            if cand.is_file():
                return str(cand)
        raise FileNotFoundError(f"{ref}: no {M2L_CHECKPOINT} in the mirrored location {local}")
    path = Path(ref)
    if path.is_dir():
        path = path / M2L_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"{ref}: directory without {M2L_CHECKPOINT}")
        return str(path)
    if path.is_file():
        return str(path)
    if ref.startswith((".", "/")) or ref.endswith(".pt"):
        raise FileNotFoundError(f"Music2Latent checkpoint {ref} does not exist")
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=ref, filename=M2L_CHECKPOINT)


def load_music2latent(checkpoint: str, device: torch.device):
    """music2latent's EncoderDecoder around a UNet loaded from ``checkpoint``, no download."""
    from music2latent.inference import EncoderDecoder
    from music2latent.models import UNet

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("gen_state_dict", state)
    gen = UNet()
    result = gen.load_state_dict(state, strict=False)
    missing_encoder = [k for k in result.missing_keys if k.startswith("encoder.")]
    if missing_encoder:
        raise ValueError(
            f"{checkpoint}: not a Music2Latent checkpoint ({len(missing_encoder)} encoder "
            f"weights missing, e.g. {missing_encoder[:3]})"
        )
    codec = EncoderDecoder.__new__(EncoderDecoder)  # skips __init__'s unconditional download
    codec.device = device
    codec.load_path_inference = checkpoint
    codec.gen = gen.to(device).eval()
    return codec


def _load_m2l(cfg: AudioConfig, device: torch.device) -> Loaded:
    if cfg.random_init:
        from musictext.audio.tiny import TinyMusic2Latent, init_seed

        arch = dict(cfg.random_init_arch)
        model = TinyMusic2Latent(
            cfg.sample_rate,
            int(cfg.latent_channels),
            hidden=int(arch.get("hidden", 64)),
            n_mels=int(arch.get("n_mels", 64)),
            seed=init_seed(cfg.kind, arch),
        )
        return Loaded(model.to(device).eval(), None, cfg.sample_rate)
    from music2latent.hparams import sample_rate as m2l_rate

    checkpoint = m2l_checkpoint_path(cfg.model)
    log.info("Music2Latent checkpoint %s", checkpoint)
    return Loaded(load_music2latent(checkpoint, device), None, int(m2l_rate))


def save_music2latent_checkpoint(gen: torch.nn.Module, directory: str | os.PathLike) -> str:
    """Write a UNet's weights in music2latent's checkpoint layout (tests, mirrors)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / M2L_CHECKPOINT
    torch.save({"gen_state_dict": gen.state_dict()}, path)
    return str(path)
