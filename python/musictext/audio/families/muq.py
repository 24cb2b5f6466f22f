"""MuQ-MuLan ("muq"): per-window 512-D MuLan latents -> 1536 = 3 x 512.

The real model comes from the ``muq`` package, which lives in the audio step's own image
(requirements/audio.txt: transformers<5, torchaudio, x_clip).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from musictext.audio.decode import load_librosa, load_torchaudio_like
from musictext.audio.families.base import FamilySpec, LibrosaLoadedConfig, Loaded, WindowedAdapter
from musictext.audio.random_init import DEFAULT_SEED, LogMel, gaussian, init_seed
from musictext.hub import resolve_pretrained

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


class TinyMuLan(nn.Module):
    """MuQ-MuLan's audio call: ``forward(wavs=[B, samples]) -> [B, embed_dim]``.

    Like MuLan, each window is cut into ``clip_secs`` clips (the last partial clip is filled
    with the window's beginning), each clip is embedded and L2-normalised, and the clip
    latents are averaged. MuLan's clips are 10 s (twelve per 120 s window); the demo's 2 s
    windows use 1 s clips (``random_init_arch.clip_secs``), so a window still averages several
    clip latents and a clip still covers most tempo lags (0.2 s .. 1 s of the 0.2 .. 1.2 s).
    A clip embedding is a fixed random 2-layer projection of log-mel statistics: spectral shape
    (timbre/register), level (dynamics), temporal spread, onset strength (articulation/drums)
    and the onset autocorrelation (tempo).
    """

    def __init__(self, sample_rate: int, embed_dim: int, n_mels: int = 64, hidden: int = 128,
                 clip_secs: float = 10, n_lags: int = 48, seed: int = DEFAULT_SEED):
        super().__init__()
        self.sr, self.clip_secs, self.embed_dim = int(sample_rate), float(clip_secs), int(embed_dim)
        hop = self.sr // 50  # 50 frames/s
        self.frontend = LogMel(self.sr, 2 * hop if 2 * hop >= 256 else 256, hop, n_mels, center=True)
        self.lags = torch.arange(10, 10 + n_lags)  # 0.2 s .. ~1.2 s at 50 frames/s
        n_features = 3 * n_mels + 1 + n_lags
        gen = torch.Generator().manual_seed(seed)
        self.proj1 = nn.Parameter(gaussian(gen, hidden, n_features), requires_grad=False)
        self.proj2 = nn.Parameter(gaussian(gen, embed_dim, hidden), requires_grad=False)

    def _clip_index(self, length: int) -> list[torch.Tensor]:
        delta = int(round(self.sr * self.clip_secs))
        index, accum = [], 0
        while accum + delta <= length:
            index.append(torch.arange(accum, accum + delta))
            accum += delta
        if accum < length:
            head = torch.arange(0, min(delta - (length - accum), length))
            index.append(torch.cat([torch.arange(accum, length), head]))
        return index

    def clip_features(self, clips: torch.Tensor) -> torch.Tensor:
        """[N, samples] -> [N, n_features]."""
        lm = self.frontend(clips)  # [N, M, F]
        spectrum = lm.mean(-1)
        level = spectrum.mean(-1, keepdim=True)
        shape = spectrum - level
        spread = lm.std(-1, correction=0)
        onset_bands = torch.relu(lm[..., 1:] - lm[..., :-1])
        onset_strength = onset_bands.mean(-1)
        env = onset_bands.sum(-2)
        env = env - env.mean(-1, keepdim=True)
        energy = (env * env).sum(-1, keepdim=True)
        frames = env.shape[-1]
        acf = []
        for lag in self.lags.tolist():
            if lag < frames:
                acf.append((env[..., lag:] * env[..., :-lag]).sum(-1))
            else:
                acf.append(torch.zeros_like(env[..., 0]))
        acf = torch.stack(acf, -1) / (energy + 1e-8)
        return torch.cat([shape * 4.0, level, spread * 4.0, onset_strength * 8.0, acf], dim=-1)

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be [B, samples], got {tuple(wavs.shape)}")
        outs = []
        for idx in self._clip_index(wavs.shape[-1]):
            feats = self.clip_features(wavs[:, idx.to(wavs.device)])
            hidden = torch.tanh(feats @ self.proj1.T)
            latent = nn.functional.normalize(hidden @ self.proj2.T, dim=-1)
            outs.append(latent)
        return torch.stack(outs, 0).mean(0)


def build_tiny_mulan(cfg: MuQAudioConfig, device: torch.device) -> Loaded:
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
