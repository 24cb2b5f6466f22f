"""Music2Latent ("music2latent", exported as "latent"): the whole track through ``encode``,
per-frame rows [re/im interleave of C channels | C magnitudes] -> 576 = 3 x 192."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from musictext import storage
from musictext.audio.families.base import AudioConfigBase, FamilyAdapter, FamilySpec, Loaded
from musictext.audio.features import music2latent_features
from musictext.audio.random_init import DEFAULT_SEED, LogMel, gaussian, init_seed
from musictext.hub import is_remote, mirror_remote

log = logging.getLogger(__name__)

M2L_CHECKPOINT = "music2latent.pt"
# music2latent.encode's internal batching length (the sidecar passes 10 s at 44.1 kHz).
M2L_MAX_WAVEFORM = 44100 * 10


class Music2LatentAudioConfig(AudioConfigBase):
    kind: Literal["music2latent"]
    latent_channels: int  # 64

    @property
    def window_dim(self) -> int:
        # re/im interleave (2*C rows) + magnitude (C rows)
        return 3 * int(self.latent_channels)


class Music2LatentAdapter(FamilyAdapter):
    """The whole track through ``encode``; equal-length tracks share one call as "channels"
    (music2latent encodes channels independently). Its unit is the whole track (the default)."""

    def run(self, batch):
        latents = self.loaded.model.encode(
            batch,
            max_waveform_length=M2L_MAX_WAVEFORM,
            max_batch_size=max(1, int(self.cfg.batch_windows)),
        )
        latents = torch.as_tensor(latents)
        # Each track is a mono file: [C, T] -> the sidecar's mono quirk (zero imaginary part).
        return [music2latent_features(latent) for latent in latents]


class TinyMusic2Latent(nn.Module):
    """Music2Latent's ``encode(audio) -> [channels, latent_channels, T]`` at hop 4096 samples.

    Crops the waveform the way music2latent does (a multiple of 8 STFT hops of 512 plus 3 hops),
    so a 10 s clip at 44.1 kHz gives T = 107 like the real encoder. Latents are a fixed random
    1-D convolution of per-frame log-mel statistics, squashed by tanh as in the real bottleneck.
    """

    hop = 512
    downscale = 8

    def __init__(self, sample_rate: int, latent_channels: int, hidden: int = 64, n_mels: int = 64,
                 seed: int = DEFAULT_SEED):
        super().__init__()
        self.sr, self.latent_channels = int(sample_rate), int(latent_channels)
        self.frontend = LogMel(self.sr, 4 * self.hop, self.hop, n_mels, center=False)
        gen = torch.Generator().manual_seed(seed)
        n_in = 2 * n_mels
        self.conv1 = nn.Parameter(
            torch.randn(hidden, n_in, 3, generator=gen) / math.sqrt(3 * n_in), requires_grad=False
        )
        self.conv2 = nn.Parameter(gaussian(gen, latent_channels, hidden)[..., None], requires_grad=False)

    def frames_for(self, samples: int) -> int:
        return ((samples - 3 * self.hop) // self.hop) // self.downscale

    @torch.no_grad()
    def encode(self, audio, max_waveform_length=None, max_batch_size=None) -> torch.Tensor:
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.dim() == 1:
            audio = audio[None]
        frames = self.frames_for(audio.shape[-1])
        if frames < 1:
            raise ValueError(
                f"audio of {audio.shape[-1]} samples is too short for a latent frame "
                f"(needs {3 * self.hop + self.hop * self.downscale})"
            )
        audio = audio[:, : frames * self.hop * self.downscale + 3 * self.hop]
        audio = audio.to(self.conv1.device)
        lm = self.frontend(audio)[..., : frames * self.downscale]  # [ch, M, 8T]
        lm = lm.reshape(*lm.shape[:-1], frames, self.downscale)
        feats = torch.cat([lm.mean(-1), lm.std(-1, correction=0) * 4.0], dim=-2)  # [ch, 2M, T]
        hidden = torch.tanh(nn.functional.conv1d(feats, self.conv1, padding=1))
        return torch.tanh(nn.functional.conv1d(hidden, self.conv2))


def build_tiny_music2latent(cfg: Music2LatentAudioConfig, device: torch.device) -> Loaded:
    arch = dict(cfg.random_init_arch)
    model = TinyMusic2Latent(
        cfg.sample_rate,
        int(cfg.latent_channels),
        hidden=int(arch.get("hidden", 64)),
        n_mels=int(arch.get("n_mels", 64)),
        seed=init_seed(cfg.kind, arch),
    )
    return Loaded(model.to(device).eval(), None, cfg.sample_rate)


def load_music2latent_checkpoint(cfg: Music2LatentAudioConfig, device: torch.device) -> Loaded:
    from music2latent.hparams import sample_rate as m2l_rate

    checkpoint = m2l_checkpoint_path(cfg.model)
    log.info("Music2Latent checkpoint %s", checkpoint)
    return Loaded(load_music2latent(checkpoint, device), None, int(m2l_rate))


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


def save_music2latent_checkpoint(gen: torch.nn.Module, directory: str | os.PathLike) -> str:
    """Write a UNet's weights in music2latent's checkpoint layout (tests, mirrors)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / M2L_CHECKPOINT
    torch.save({"gen_state_dict": gen.state_dict()}, path)
    return str(path)


FAMILY = FamilySpec(
    name="music2latent",
    config=Music2LatentAudioConfig,
    adapter=Music2LatentAdapter,
    load_checkpoint=load_music2latent_checkpoint,
    build_random_init=build_tiny_music2latent,
    export_name="latent",
)
