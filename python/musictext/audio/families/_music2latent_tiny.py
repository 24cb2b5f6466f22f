"""Music2Latent's random-init stand-in (demo and tests), apart from ``music2latent.py`` so that
reading the family's config (the clip stage does) does not import torch."""

from __future__ import annotations

import math
import os

import numpy as np
import soundfile as sf
import torch
from torch import nn

from musictext.audio.families.music2latent import M2L_DOWNSCALE, M2L_HOP, M2L_MIN_SAMPLES
from musictext.audio.random_init import DEFAULT_SEED, LogMel, gaussian


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
