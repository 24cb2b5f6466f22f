"""Decode clip files to checked mono waveforms at the model rate (runs in worker threads).

soundfile and torch's convolution release the GIL, so a thread pool decodes and resamples
while the main thread runs the model.
"""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile as sf
import torch

from musictext import storage
from musictext.audio.features import prepare_waveform, to_mono
from musictext.rejects import ItemError

# A decoded file or clip peaking below this (about -120 dBFS) is silent: nothing to embed.
SILENT_FILE_PEAK = 1e-6


def read_audio(uri: str) -> tuple[torch.Tensor, int]:
    """Any soundfile-readable file (local or fsspec URI) -> ([channels, samples] float32, rate)."""
    if storage.is_local(uri):
        data, rate = sf.read(storage.local_path(uri), dtype="float32", always_2d=True)
    else:
        data, rate = sf.read(io.BytesIO(storage.read_bytes(uri)), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


def check_waveform(item: str, mono: torch.Tensor) -> None:
    """Raise ItemError for audio the sidecar would turn into a meaningless vector."""
    if mono.numel() == 0 or mono.shape[-1] == 0:
        raise ItemError(item, "zero-length audio")
    low, high = (float(v) for v in torch.aminmax(mono))  # one pass, no copy
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ItemError(item, "audio holds NaN or infinite samples")
    peak = max(-low, high)
    if peak < SILENT_FILE_PEAK:
        raise ItemError(item, f"all-silent audio (peak {peak:.1e})")


def decode_mono(item: str, uri: str) -> tuple[torch.Tensor, int]:
    """Decode and mono-mix one file, checked; every failure is an ItemError naming the item.

    Silence is judged on the mono mix, the signal every model sees.
    """
    try:
        waveform, rate = read_audio(uri)
    except FileNotFoundError:
        raise ItemError(item, f"audio file missing: {uri}") from None
    except Exception as err:  # soundfile raises LibsndfileError/RuntimeError for bad data
        reason = getattr(err, "error_string", None) or f"{type(err).__name__}: {err}"
        raise ItemError(item, f"undecodable audio {uri}: {reason}") from None
    mono = to_mono(waveform)
    check_waveform(item, mono)
    return mono, rate


def load_clip(item: str, uri: str, target_rate: int, declared_rate: int | None = None) -> torch.Tensor:
    """Decode, check, mono-mix and resample one clip (the embedding stage's input)."""
    mono, rate = decode_mono(item, uri)
    if declared_rate is not None and int(declared_rate) != rate:
        raise ItemError(item, f"{uri} is {rate} Hz but the clip table says {declared_rate} Hz")
    return prepare_waveform(mono, rate, target_rate)
