"""Music2Latent ("music2latent", exported as "latent"): the whole file through ``encode``;
per-frame rows [re/im interleave of the 64 latent channels | 64 magnitudes] -> 576 = 3 x 192.

Navidrome's upload path calls ``model.encode(path, max_waveform_length=44100 * 10)``, which
reads every channel of the file at its own rate, and takes the latents of channel 0 and 1 as
the real and imaginary parts (navidrome-contract.md, "What is actually stored"). So a stereo
file's left and right channels become re and im, and it stores no vector for a mono file
(IndexError) or one with more than two channels (to_R128's reshape fails).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import torch
from torch import nn

from musictext import storage
from musictext.audio.decode import load_channels
from musictext.audio.families.base import AudioConfigBase, FamilyAdapter, FamilySpec, Loaded
from musictext.audio.features import music2latent_features
from musictext.audio.random_init import DEFAULT_SEED, LogMel, gaussian, init_seed
from musictext.hub import is_remote, mirror_remote
from musictext.rejects import ItemError

log = logging.getLogger(__name__)

M2L_CHECKPOINT = "music2latent.pt"
# What the sidecar passes to encode (10 s at 44.1 kHz): the length of encode's internal chunks.
M2L_MAX_WAVEFORM = 44100 * 10
# music2latent 0.1.8's STFT hop and time downscaling (hparams.hop, 2 ** freq_downsample_list.count(0)).
M2L_HOP = 512
M2L_DOWNSCALE = 8
# The shortest file encode gives one latent frame for: 3 hops of STFT context + 8 hops.
M2L_MIN_SAMPLES = 3 * M2L_HOP + M2L_DOWNSCALE * M2L_HOP
# Why Navidrome's upload path stores nothing for a file; the embed step records these reasons.
MONO_REASON = (
    "mono file: Navidrome stores no Music2Latent vector for mono files "
    "(its upload path reads latent channel 1 as the imaginary part)"
)
MULTICHANNEL_REASON = (
    "Navidrome stores no Music2Latent vector for files with more than two channels "
    "(to_R128 reshapes exactly two latent channels to 128 rows)"
)


class Music2LatentAudioConfig(AudioConfigBase):
    kind: Literal["music2latent"]
    latent_channels: int  # 64
    # Training targets read the clip's 44.1 kHz stereo rendering ("stereo44k"), the vector
    # Navidrome stores for the usual library file. True reads the clip as decoded from its
    # source ("native"): its own rate taken as 44.1 kHz and its own channels, exactly what the
    # upload path does with the user's files (mono and >2-channel clips are then rejected).
    m2l_native_rate: bool = False

    @property
    def window_dim(self) -> int:
        # re/im interleave (2*C rows) + magnitude (C rows)
        return 3 * int(self.latent_channels)

    @property
    def clip_rendering(self) -> str:
        return "native" if self.m2l_native_rate else "stereo44k"


class Music2LatentAdapter(FamilyAdapter):
    """The whole file through ``encode``. A unit is a track's [channels, samples]; equal-shaped
    tracks share one ``encode`` call, their channels stacked as encode's "channels" (music2latent
    encodes each channel on its own, with per-sample normalisation only)."""

    def load_file(self, item, uri):
        audio, _ = load_channels(item, uri)  # the file's own rate: encode(path) never resamples
        channels = int(audio.shape[0])
        if channels == 1:
            raise ItemError(item, MONO_REASON)
        if channels > 2:
            raise ItemError(item, f"{channels}-channel file: {MULTICHANNEL_REASON}")
        if audio.shape[-1] < M2L_MIN_SAMPLES:
            raise ItemError(
                item, f"{audio.shape[-1]} samples: shorter than one Music2Latent frame ({M2L_MIN_SAMPLES})"
            )
        return audio

    def units(self, loaded):
        track = loaded[None] if loaded.dim() == 1 else loaded  # the tensor path: one channel
        if track.dim() != 2 or track.numel() == 0:
            raise ValueError(f"expected a waveform [channels, samples], got shape {tuple(loaded.shape)}")
        return [track]

    def run(self, batch):
        tracks, channels, samples = batch.shape
        latents = self.loaded.model.encode(
            batch.reshape(tracks * channels, samples),
            max_waveform_length=M2L_MAX_WAVEFORM,
            max_batch_size=max(1, int(self.cfg.batch_windows)) * channels,
        )
        latents = torch.as_tensor(latents)
        # [channels, C, T] per track: two channels are (re, im); one is the tensor path's mono quirk.
        return [music2latent_features(x) for x in latents.reshape(tracks, channels, *latents.shape[1:])]


class TinyMusic2Latent(nn.Module):
    """Music2Latent's ``encode(path_or_audio, max_waveform_length=None, max_batch_size=None,
    extract_features=False) -> [channels, latent_channels, T]`` with music2latent 0.1.8's
    semantics (``inference.encode_audio_inference``):

    - a path is read with ``soundfile.read(path, dtype="float32", always_2d=True)``: every
      channel at the file's own rate; an array's first axis is its channels ([samples] is one);
    - the waveform is cropped to 8k STFT hops of 512 plus 3 hops (T = k frames);
    - a representation longer than ``max_waveform_length`` is cut into equal chunks (the last
      one filled with the track's own beginning), chunks and channels are encoded as one batch
      (``max_batch_size`` at a time), and the latents are joined back over time and trimmed.

    The representation is a log-mel spectrogram (the same STFT frames); each latent frame is a
    fixed random 1-D convolution of the mean and spread of its 8 frames, squashed by tanh as in
    the real bottleneck. Defaults are the package's (hparams_inference.py).
    """

    hop = M2L_HOP
    downscale = M2L_DOWNSCALE
    default_max_waveform_length = 44100 * 60
    default_max_batch_size = 1

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

    @staticmethod
    def read(path_or_audio) -> torch.Tensor:
        """[channels, samples] float32, as music2latent reads a path or takes an array."""
        if isinstance(path_or_audio, (str, os.PathLike)):
            if not os.path.exists(path_or_audio):
                raise FileNotFoundError(f"no audio file {path_or_audio}")
            data, _ = sf.read(path_or_audio, dtype="float32", always_2d=True)
            return torch.from_numpy(np.ascontiguousarray(data.T))
        audio = torch.as_tensor(path_or_audio, dtype=torch.float32)
        return audio[None] if audio.dim() == 1 else audio

    def encoder(self, representation: torch.Tensor, extract_features: bool = False) -> torch.Tensor:
        """[N, n_mels, 8k] -> [N, latent_channels, k] (``extract_features``: the layer before)."""
        n, mels, frames = representation.shape
        groups = representation.reshape(n, mels, frames // self.downscale, self.downscale)
        feats = torch.cat([groups.mean(-1), groups.std(-1, correction=0) * 4.0], dim=-2)
        hidden = torch.tanh(nn.functional.conv1d(feats, self.conv1, padding=1))
        if extract_features:
            return hidden
        return torch.tanh(nn.functional.conv1d(hidden, self.conv2))

    @torch.no_grad()
    def encode(self, path_or_audio, max_waveform_length=None, max_batch_size=None,
               extract_features=False) -> torch.Tensor:
        max_waveform_length = max_waveform_length or self.default_max_waveform_length
        max_batch_size = max_batch_size or self.default_max_batch_size
        audio = self.read(path_or_audio).to(self.conv1.device)
        channels = audio.shape[0]
        frames = self.frames_for(audio.shape[-1])
        if frames < 1:
            raise ValueError(
                f"audio of {audio.shape[-1]} samples is too short for a latent frame (needs {M2L_MIN_SAMPLES})"
            )
        audio = audio[:, : frames * self.hop * self.downscale + 3 * self.hop]
        representation = self.frontend(audio)  # [channels, n_mels, 8 * frames]
        length = representation.shape[-1]
        max_length = (int(max_waveform_length / self.hop) // self.downscale) * self.downscale
        pad = 0
        if length > max_length:
            pad = max_length - length % max_length
            filler = torch.cat([representation] * (1 + pad // length), dim=-1)[..., :pad]
            representation = torch.cat([representation, filler], dim=-1)
            representation = torch.cat(torch.split(representation, max_length, dim=-1), dim=0)
        latent = torch.cat([self.encoder(part, extract_features)
                            for part in torch.split(representation, max_batch_size, dim=0)])
        if latent.shape[0] > 1:
            latent = torch.cat(torch.split(latent, channels, dim=0), dim=-1)
        return latent[..., : latent.shape[-1] - pad // self.downscale]


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
