"""Band-limited resampling equal to ``torchaudio.functional.resample`` with default arguments.

Navidrome's sidecar resamples with torchaudio (sinc interpolation, Hann window,
lowpass_filter_width=6, rolloff=0.99). torchaudio does not import on the CPU torch used here and
is a heavy dependency for the main image, so the same polyphase filter is built from torch ops.
"""

from __future__ import annotations

import math
from functools import lru_cache

from musictext.lazy import lazy_module

torch = lazy_module("torch")

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


@lru_cache(maxsize=16)
def _kernel(orig: int, new: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """Polyphase sinc kernels [new, 1, K] for reduced rates orig->new, and the half-width."""
    base_freq = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / base_freq)
    # Offsets of the input taps each output phase sees, in input-sample units.
    taps = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    phases = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new
    t = (phases + taps) * base_freq
    t = t.clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = sinc * window * (base_freq / orig)
    return kernel.to(dtype), width


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Resample the last dimension of ``waveform`` from ``orig_freq`` to ``new_freq`` Hz."""
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    dtype = waveform.dtype if waveform.is_floating_point() else torch.float32
    kernel, width = _kernel(orig, new, dtype)
    shape = waveform.shape
    x = waveform.to(dtype).reshape(-1, 1, shape[-1])
    length = shape[-1]
    x = torch.nn.functional.pad(x, (width, width + orig))
    y = torch.nn.functional.conv1d(x, kernel.to(x.device), stride=orig)  # [B, new, frames]
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    target = math.ceil(new * length / orig)
    return y[..., :target].reshape(*shape[:-1], target)
