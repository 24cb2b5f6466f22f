"""MuQ-MuLan's random-init stand-in (demo and tests), apart from ``muq.py`` so that reading the
family's config (the clip stage does) does not import torch."""

from __future__ import annotations

import torch
from torch import nn

from musictext.audio.random_init import DEFAULT_SEED, LogMel, gaussian


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
