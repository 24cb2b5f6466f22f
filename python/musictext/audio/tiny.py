"""Small random-init stand-ins with the real models' call signatures (demo and tests).

Requirements they meet:
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


def _gaussian(gen: torch.Generator, rows: int, cols: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=gen) / math.sqrt(cols)


class TinyMuLan(nn.Module):
    """MuQ-MuLan's audio call: ``forward(wavs=[B, samples]) -> [B, embed_dim]``.

    Like MuLan, each window is cut into ``clip_secs`` clips (the last partial clip is filled
    with the window's beginning), each clip is embedded and L2-normalised, and the clip
    latents are averaged. A clip embedding is a fixed random 2-layer projection of log-mel
    statistics: spectral shape (timbre/register), level (dynamics), temporal spread,
    onset strength (articulation/drums) and the onset autocorrelation (tempo).
    """

    def __init__(self, sample_rate: int, embed_dim: int, n_mels: int = 64, hidden: int = 128,
                 clip_secs: int = 10, n_lags: int = 48, seed: int = DEFAULT_SEED):
        super().__init__()
        self.sr, self.clip_secs, self.embed_dim = int(sample_rate), int(clip_secs), int(embed_dim)
        hop = self.sr // 50  # 50 frames/s
        self.frontend = LogMel(self.sr, 2 * hop if 2 * hop >= 256 else 256, hop, n_mels, center=True)
        self.lags = torch.arange(10, 10 + n_lags)  # 0.2 s .. ~1.2 s at 50 frames/s
        n_features = 3 * n_mels + 1 + n_lags
        gen = torch.Generator().manual_seed(seed)
        self.proj1 = nn.Parameter(_gaussian(gen, hidden, n_features), requires_grad=False)
        self.proj2 = nn.Parameter(_gaussian(gen, embed_dim, hidden), requires_grad=False)

    def _clip_index(self, length: int) -> list[torch.Tensor]:
        delta = self.sr * self.clip_secs
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
        self.conv2 = nn.Parameter(_gaussian(gen, latent_channels, hidden)[..., None], requires_grad=False)

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


def tiny_mert(sample_rate: int, num_hidden_layers: int, hidden_size: int, arch: dict, seed: int):
    """A small HubertModel (MERT's interface) and its feature extractor, seeded."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    arch = {k: v for k, v in arch.items() if k != "seed"}
    conv = int(arch.pop("conv_channels", min(512, max(32, hidden_size))))
    heads = int(arch.pop("num_attention_heads", max(1, hidden_size // 64)))
    kwargs = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        conv_dim=(conv,) * 7,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=min(16, hidden_size),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )
    kwargs.update(arch)
    config = HubertConfig(**kwargs)
    with seeded(seed):
        model = HubertModel(config)
    model.eval()
    processor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=sample_rate,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    return model, processor
