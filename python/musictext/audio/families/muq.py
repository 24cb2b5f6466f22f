"""MuQ-MuLan ("muq"): per-window 512-D MuLan latents -> 1536 = 3 x 512.

The real model comes from the ``muq`` package, which lives in the audio step's own image
(requirements/audio.txt: transformers<5, torchaudio, x_clip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from musictext.audio.decode import load_librosa, load_torchaudio_like
from musictext.audio.families.base import FamilySpec, LibrosaLoadedConfig, Loaded, WindowedAdapter
from musictext.hub import resolve_pretrained
from musictext.lazy import lazy_module

# Loaded on first use (the clip stage reads this module's config only); the stand-in model,
# an nn.Module, lives in _muq_tiny.py for the same reason.
torch = lazy_module("torch")

# muq chooses each tower's class from its name: "muq" (any case) for the audio tower,
# "xlm-roberta" for the text tower.
MUQ_TOWER_NAMES = {"audio_model": ("muq", str.lower), "text_model": ("xlm-roberta", str)}


class MuQAudioConfig(LibrosaLoadedConfig):
    kind: Literal["muq_mulan"]
    embed_dim: int  # per-window MuLan latent (512)
    # Where its towers live ({audio_model: .., text_model: ..}; hub id, directory or bucket URI).
    # Its config.json names hub ids that it loads before its own checkpoint replaces their
    # weights, so a cluster without internet mirrors those two as well.
    towers: dict[str, str] = Field(default_factory=dict)
    # 10 s clips per audio-tower call (the sidecar's serial mode is 1; larger calls keep a GPU
    # busy, but on a CPU the spectrograms of many clips at once cost more than they save).
    clips_per_call: int = 12
    # How a file is loaded (navidrome-contract.md, upload path): "librosa" is what the sidecar
    # does with torchaudio >= 2.9 (any install since Oct 2025): librosa.load, soxr_hq;
    # "torchaudio" is its older path: decode, channel mean, torchaudio's default resampling.
    loader: Literal["librosa", "torchaudio"] = "librosa"

    @property
    def clip_rendering(self) -> str:
        # The torchaudio loader resamples differently: it reads the clip as decoded.
        return "native" if self.loader == "torchaudio" else super().clip_rendering

    @field_validator("towers")
    @classmethod
    def _known_towers(cls, towers: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(towers) - set(MUQ_TOWER_NAMES))
        if unknown:
            raise ValueError(f"audio.towers may name {sorted(MUQ_TOWER_NAMES)}, not {unknown}")
        return towers

    @property
    def window_dim(self) -> int:
        return int(self.embed_dim)


class MuQAdapter(WindowedAdapter):
    """``model(wavs=[B, samples]) -> [B, embed_dim]`` (MuLan averages its 10 s clip latents).

    The real MuQMuLan runs its audio tower on one 10 s clip at a time; here the clips of all the
    batch's windows go through the tower ``clips_per_call`` at a time (the same latents within
    float noise, in far fewer GPU calls).
    """

    cfg: MuQAudioConfig

    def load_file(self, item, uri):
        if self.cfg.loader == "torchaudio":
            return load_torchaudio_like(item, uri, self.cfg.sample_rate)
        return load_librosa(item, uri, self.cfg.sample_rate)

    def run(self, batch):
        model = self.loaded.model
        tower = getattr(model, "mulan_module", None)
        if tower is None:  # a stand-in with the call signature only
            out = model(wavs=batch)
        else:
            clips = [model._get_all_clips(w) for w in batch]  # MuLan's own cut (the last clip wraps)
            flat, size = torch.cat(clips), max(1, int(self.cfg.clips_per_call))
            latents = torch.cat([tower.get_audio_latents(flat[k : k + size]) for k in range(0, len(flat), size)])
            out = torch.stack([part.mean(0) for part in latents.split([len(c) for c in clips])])
        return [row.float()[:, None] for row in out]


def build_tiny_mulan(cfg: MuQAudioConfig, device: torch.device) -> Loaded:
    from musictext.audio.families._muq_tiny import TinyMuLan
    from musictext.audio.random_init import init_seed

    arch = dict(cfg.random_init_arch)
    model = TinyMuLan(
        cfg.sample_rate,
        int(cfg.embed_dim),
        n_mels=int(arch.get("n_mels", 64)),
        hidden=int(arch.get("hidden", 128)),
        clip_secs=float(arch.get("clip_secs", 10)),
        seed=init_seed(cfg.kind, arch),
    )
    return Loaded(model.to(device).eval(), None, cfg.sample_rate)


def load_muq_mulan(cfg: MuQAudioConfig, device: torch.device) -> Loaded:
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


FAMILY = FamilySpec(
    name="muq",
    config=MuQAudioConfig,
    adapter=MuQAdapter,
    load_checkpoint=load_muq_mulan,
    build_random_init=build_tiny_mulan,
)
