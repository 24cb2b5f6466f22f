"""One embedding code path for the three audio families.

waveform -> mono -> resample -> units (windows, or the whole track) -> batched model calls
-> per-unit columns [D, t] -> per-track x[D, T] -> enrich -> [3*D].

A ``FamilyAdapter`` holds only what truly differs between the families: how a track becomes
units, and how a batch of equal-length units becomes columns. Everything else -- batching
windows across tracks, autocast, float32 reduction, enrichment -- is shared.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from musictext.audio.features import (
    cut_windows,
    enrich,
    music2latent_features,
    prepare_waveform,
    window_starts,
)
from musictext.config import AudioConfig

# music2latent.encode's internal batching length (the sidecar passes 10 s at 44.1 kHz).
M2L_MAX_WAVEFORM = 44100 * 10


class FamilyAdapter:
    """The per-family strategy. Subclasses never touch enrichment or cross-track batching."""

    def __init__(self, cfg: AudioConfig, loaded=None):
        self.cfg = cfg
        self.loaded = loaded

    def units(self, mono: torch.Tensor) -> list[torch.Tensor]:
        """Model inputs of one track (each [samples]); units of equal length may be batched."""
        raise NotImplementedError

    def n_units(self, samples: int) -> int:
        """How many units a track of ``samples`` samples (at the model rate) becomes."""
        return 1

    def run(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """[B, samples] equal-length units -> B float32 matrices [D, t]."""
        raise NotImplementedError


class _Windowed(FamilyAdapter):
    def _chunk_hop(self) -> tuple[int, int]:
        sr = self.cfg.sample_rate
        return int(float(self.cfg.window_s) * sr), int(float(self.cfg.hop_s) * sr)

    def units(self, mono):
        return cut_windows(mono, *self._chunk_hop())

    def n_units(self, samples):
        return len(window_starts(samples, *self._chunk_hop()))


class MuQAdapter(_Windowed):
    """``model(wavs=[B, samples]) -> [B, embed_dim]`` (MuLan averages its 10 s clip latents).

    The real MuQMuLan runs its audio tower on one 10 s clip at a time; here the clips of all the
    batch's windows go through the tower ``clips_per_call`` at a time (the same latents within
    float noise, in far fewer GPU calls).
    """

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


class MertAdapter(_Windowed):
    """Feature extractor, ``output_hidden_states``, mean over frames of all L+1 states."""

    def run(self, batch):
        processor, model = self.loaded.processor, self.loaded.model
        arrays = [np.asarray(w.detach().cpu(), dtype=np.float32) for w in batch]
        inputs = processor(arrays, sampling_rate=self.loaded.sample_rate, return_tensors="pt")
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        out = model(**inputs, output_hidden_states=True)
        # [L+1, B, frames, H] -> mean over frames in float32 -> [B, (L+1)*H], layer-major.
        states = torch.stack([h.float() for h in out.hidden_states]).mean(dim=2)
        flat = states.permute(1, 0, 2).reshape(states.shape[1], -1)
        return [row[:, None] for row in flat]


class Music2LatentAdapter(FamilyAdapter):
    """The whole track through ``encode``; equal-length tracks share one call as "channels"
    (music2latent encodes channels independently)."""

    def units(self, mono):
        return [mono]

    def run(self, batch):
        latents = self.loaded.model.encode(
            batch,
            max_waveform_length=M2L_MAX_WAVEFORM,
            max_batch_size=max(1, int(self.cfg.batch_windows)),
        )
        latents = torch.as_tensor(latents)
        # Each track is a mono file: [C, T] -> the sidecar's mono quirk (zero imaginary part).
        return [music2latent_features(latent) for latent in latents]


ADAPTERS: dict[str, type[FamilyAdapter]] = {
    "muq_mulan": MuQAdapter,
    "mert": MertAdapter,
    "music2latent": Music2LatentAdapter,
}


def target_dim_for(cfg: AudioConfig) -> int:
    """Enriched target length computed from the config alone (no weights loaded)."""
    return cfg.target_dim


def _autocast_dtype(name: str):
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


class AudioEmbedder:
    """Audio -> target vector, exactly as Navidrome's sidecar computes it."""

    def __init__(self, cfg: AudioConfig, adapter: FamilyAdapter, device: torch.device):
        self.cfg = cfg
        self.adapter = adapter
        self.device = device
        # The per-family row counts live in one place: AudioConfig.window_dim.
        self.window_dim = cfg.window_dim
        self.target_dim = cfg.target_dim
        self.sample_rate = int(cfg.sample_rate)

    # -- helpers --------------------------------------------------------------------------
    def prepare(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Mono at the model rate; what decode workers hand over."""
        return prepare_waveform(waveform, sample_rate, self.sample_rate)

    def _autocast(self):
        dtype = _autocast_dtype(self.cfg.autocast)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _run(self, batch: list[torch.Tensor]) -> list[torch.Tensor]:
        stacked = torch.stack(batch).to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            cols = self.adapter.run(stacked)
        cols = [c.detach().float().cpu() for c in cols]
        for c in cols:
            if c.shape[0] != self.window_dim:
                raise ValueError(
                    f"{self.cfg.model}: model gives {c.shape[0]} rows per window but the config "
                    f"implies {self.window_dim}; check the architecture numbers in configs/"
                )
        return cols

    # -- public ---------------------------------------------------------------------------
    def embed_prepared(self, monos: Sequence[torch.Tensor]) -> torch.Tensor:
        """Already-mono, already-resampled tracks -> [N, target_dim] float32."""
        if not monos:
            return torch.zeros(0, self.target_dim)
        # Flatten every track's units; batch equal-length units across tracks.
        pending: dict[int, list[tuple[int, int, torch.Tensor]]] = defaultdict(list)
        counts = []
        for i, mono in enumerate(monos):
            if mono.dim() != 1 or mono.numel() == 0:
                raise ValueError(f"track {i}: expected a non-empty mono waveform, got {tuple(mono.shape)}")
            units = self.adapter.units(mono)
            counts.append(len(units))
            for j, unit in enumerate(units):
                pending[int(unit.shape[-1])].append((i, j, unit))
        columns: dict[tuple[int, int], torch.Tensor] = {}
        size = max(1, int(self.cfg.batch_windows))
        for group in pending.values():
            for k in range(0, len(group), size):
                part = group[k : k + size]
                for (i, j, _), col in zip(part, self._run([u for _, _, u in part])):
                    columns[(i, j)] = col
        out = torch.empty(len(monos), self.target_dim, dtype=torch.float32)
        for i, n in enumerate(counts):
            x = torch.cat([columns[(i, j)] for j in range(n)], dim=1)
            out[i] = enrich(x)
        return out

    def embed_batch(self, items: Sequence[tuple[torch.Tensor, int]]) -> torch.Tensor:
        """[(waveform [channels, samples] or [samples], sample_rate)] -> [N, target_dim]."""
        return self.embed_prepared([self.prepare(w, sr) for w, sr in items])

    def embed_audio_tensor(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """One track -> [target_dim] float32 CPU (the sidecar's per-track call)."""
        return self.embed_batch([(waveform, sample_rate)])[0]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_embedder(audio_cfg: AudioConfig, device: str | torch.device | None = None) -> AudioEmbedder:
    """Load (or random-init) the model named by ``audio_cfg`` and wrap it in the shared path."""
    from musictext.audio.loaders import load_model

    device = torch.device(device) if device is not None else default_device()
    loaded = load_model(audio_cfg, device)
    adapter = ADAPTERS[audio_cfg.kind](audio_cfg, loaded)
    return AudioEmbedder(audio_cfg, adapter, device)
