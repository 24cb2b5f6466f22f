"""One embedding code path for every audio family.

file -> the family's upload-path decode (``load_file``) -> units (windows, or the whole file)
-> batched model calls -> per-unit columns [D, t] -> per-track x[D, T] -> enrich -> [3*D].

A family's ``FamilyAdapter`` (``musictext.audio.families.<family>``) holds only what truly
differs between the families: how a file is decoded, how it becomes units, and how a batch of
equal-shaped units becomes columns. Everything else -- batching units across tracks, autocast,
float32 reduction, enrichment -- is shared.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from musictext.audio.families import family_for_kind
from musictext.audio.families.base import AudioConfigBase, FamilyAdapter, FamilySpec, Loaded
from musictext.audio.features import enrich


def _autocast_dtype(name: str):
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


class AudioEmbedder:
    """Audio file -> the vector Navidrome's upload path stores for it.

    ``model`` (and ``processor`` for MERT) is the loaded model with its upstream call
    signature, for the real checkpoints and the random-init stand-ins alike.
    """

    def __init__(self, cfg: AudioConfigBase, adapter: FamilyAdapter, device: torch.device):
        self.cfg = cfg
        self.adapter = adapter
        self.device = device
        # The per-family row counts live in one place: the family config's window_dim.
        self.window_dim = cfg.window_dim
        self.target_dim = cfg.target_dim
        self.sample_rate = int(cfg.sample_rate)

    @property
    def model(self) -> Any:
        """MuQ-MuLan: ``model(wavs=[B, samples])``; MERT: ``model(**processor(..),
        output_hidden_states=True)``; Music2Latent: ``model.encode(path_or_audio, ..)``."""
        return self.adapter.loaded.model

    @property
    def processor(self) -> Any:
        """MERT's feature extractor; None for the families without one."""
        return self.adapter.loaded.processor

    # -- helpers --------------------------------------------------------------------------
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

    # -- the upload path --------------------------------------------------------------------
    def load_file(self, uri: str, item: str | None = None) -> torch.Tensor:
        """Decode ``uri`` (local path or bucket URI) as the family's upload path does.

        Raises ItemError naming ``item`` (default: the file) and the reason, e.g. a mono file
        in the Music2Latent space, where Navidrome stores no vector.
        """
        return self.adapter.load_file(item or str(uri), str(uri))

    def embed_loaded(self, loaded: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decoded inputs (``load_file``'s) -> [N, target_dim] float32.

        Units of all tracks are batched together: equal-shaped units share model calls of at
        most ``batch_windows`` units.
        """
        if not loaded:
            return torch.zeros(0, self.target_dim)
        pending: dict[tuple[int, ...], list[tuple[int, int, torch.Tensor]]] = defaultdict(list)
        counts = []
        for i, track in enumerate(loaded):
            try:
                units = self.adapter.units(track)
            except ValueError as err:
                raise ValueError(f"track {i}: {err}") from None
            counts.append(len(units))
            for j, unit in enumerate(units):
                pending[tuple(unit.shape)].append((i, j, unit))
        columns: dict[tuple[int, int], torch.Tensor] = {}
        size = max(1, int(self.cfg.batch_windows))
        for group in pending.values():
            for k in range(0, len(group), size):
                part = group[k : k + size]
                for (i, j, _), col in zip(part, self._run([u for _, _, u in part])):
                    columns[(i, j)] = col
        out = torch.empty(len(loaded), self.target_dim, dtype=torch.float32)
        for i, n in enumerate(counts):
            x = torch.cat([columns[(i, j)] for j in range(n)], dim=1)
            out[i] = enrich(x)
        return out

    def embed_file(self, uri: str) -> torch.Tensor:
        """One file -> [target_dim] float32 CPU: what Navidrome's ``embed_music`` stores."""
        return self.embed_loaded([self.load_file(uri)])[0]

    # -- the sidecar's tensor path ------------------------------------------------------------
    def embed_batch(self, items: Sequence[tuple[torch.Tensor, int]]) -> torch.Tensor:
        """[(waveform [channels, samples] or [samples], sample_rate)] -> [N, target_dim] through
        the sidecar's ``embed_audio_tensor`` path (mono mix, torchaudio resampling)."""
        return self.embed_loaded([self.adapter.from_tensor(w, sr) for w, sr in items])

    def embed_audio_tensor(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """One waveform -> [target_dim] float32 CPU (the sidecar's ``embed_audio_tensor``)."""
        return self.embed_batch([(waveform, sample_rate)])[0]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(spec: FamilySpec, cfg: AudioConfigBase, device: torch.device) -> Loaded:
    """The family's real checkpoint, or its seeded random-init stand-in; checks the model rate."""
    loaded = (spec.build_random_init if cfg.random_init else spec.load_checkpoint)(cfg, device)
    if int(loaded.sample_rate) != int(cfg.sample_rate):
        raise ValueError(
            f"{cfg.model}: the model consumes {loaded.sample_rate} Hz but the audio config says "
            f"sample_rate={cfg.sample_rate}; fix configs/ so clips are rendered at the model rate"
        )
    return loaded


def build_embedder(audio_cfg: AudioConfigBase, device: str | torch.device | None = None) -> AudioEmbedder:
    """Load (or random-init) the model named by ``audio_cfg`` and wrap it in the shared path."""
    spec = family_for_kind(audio_cfg.kind)
    device = torch.device(device) if device is not None else default_device()
    adapter = spec.adapter(audio_cfg, load_model(spec, audio_cfg, device))
    return AudioEmbedder(audio_cfg, adapter, device)
