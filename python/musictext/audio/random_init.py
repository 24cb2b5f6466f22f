"""Building blocks of the families' small random-init stand-ins (demo and tests).

Each family holds its own stand-in, with the real model's call signature (MERT in its module;
MuQ-MuLan's and Music2Latent's in families/_muq_tiny.py and _music2latent_tiny.py, so that
reading their configs does not import torch). They meet:
- the same interface as the real model, so the one embedder code path serves both;
- deterministic weights: every task/shard that builds one gets bit-identical parameters
  (a seeded generator, never the global RNG);
- informative outputs: log-mel front ends with fixed random projections keep timbre, pitch,
  loudness and rhythm apart, so a text encoder can learn to retrieve the targets. Deep random
  transformers collapse inputs onto nearly one direction and are avoided except for MERT,
  whose real interface *is* a transformers model (kept small there).
- silence maps to an all-zero vector (bias-free projections of log1p features), so zero
  padding only rescales averages, which the final L2 normalisation removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math

import torch
from torch import nn

DEFAULT_SEED = 20240601
POWER_REF = 1e-6  # log1p(power / ref): 0 for silence, ~10-25 for music
LOG_SCALE = 0.1


def init_seed(kind: str, arch: dict) -> int:
    """The seed every builder of this random-init model uses (config-derived, stable)."""
    payload = json.dumps({"kind": kind, "seed": arch.get("seed", DEFAULT_SEED)}, sort_keys=True)
    return int(hashlib.sha256(payload.encode()).hexdigest()[:8], 16)


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's CPU RNG inside the block and restore the caller's RNG state after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 30.0) -> torch.Tensor:
    """[n_mels, n_fft//2+1] triangular filters on the HTK mel scale."""

    def hz_to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    fmax = sample_rate / 2.0
    mels = torch.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, fmax, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rise = (bins[None] - lower) / (centre - lower)
    fall = (upper - bins[None]) / (upper - centre)
    return torch.clamp(torch.minimum(rise, fall), min=0.0).to(torch.float32)


class LogMel(nn.Module):
    """[..., samples] -> [..., n_mels, frames] of log1p(mel power / ref) * 0.1 (no centring)."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int, center: bool):
        super().__init__()
        self.n_fft, self.hop, self.center = n_fft, hop, center
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fbank", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        spec = torch.stft(
            x.reshape(-1, x.shape[-1]).float(),
            self.n_fft,
            self.hop,
            window=self.window,
            center=self.center,
            return_complex=True,
        )
        power = spec.real**2 + spec.imag**2
        mel = torch.matmul(self.fbank, power)
        out = torch.log1p(mel / POWER_REF) * LOG_SCALE
        return out.reshape(*lead, *out.shape[-2:])


def gaussian(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
    """[rows, cols] fixed random projection with unit-variance outputs for unit-variance inputs."""
    return torch.randn(rows, cols, generator=gen) / math.sqrt(cols)
