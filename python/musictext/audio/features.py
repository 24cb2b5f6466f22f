"""The sidecar's numeric contract: mono/resample, windows, Music2Latent rows, enrichment.

Everything here is pure tensor code with no model in sight, so the contract can be tested
exactly (see navidrome-contract.md, "Common steps" and "Music2Latent").
"""

from __future__ import annotations

from musictext.audio.resample import resample
from musictext.lazy import lazy_module

torch = lazy_module("torch")

# IQR of a standard normal: (q75 - q25) / 1.349 estimates the standard deviation.
IQR_TO_STD = 1.3489795003921634
# Added under the square root of the Music2Latent magnitude rows.
MAG_EPS = 1e-12


def enrich(x: torch.Tensor) -> torch.Tensor:
    """[D, T] per-window vectors -> [3*D] = L2-normalised [mean | IQR/1.349 | mean signed diff].

    T == 1 gives exactly zero robust and dmean blocks. Computed in float32; returned on CPU.
    A zero vector stays zero (no division by zero).
    """
    if x.dim() != 2:
        raise ValueError(f"enrich expects [D, T], got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError("enrich needs at least one window/frame (T >= 1)")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    mean = x.mean(dim=-1)
    q = torch.quantile(x, torch.tensor([0.25, 0.75], dtype=torch.float32), dim=-1)
    robust = (q[1] - q[0]) / IQR_TO_STD
    if x.shape[1] >= 2:
        dmean = (x[:, 1:] - x[:, :-1]).mean(dim=-1)
    else:
        dmean = torch.zeros_like(mean)
    vec = torch.cat([mean, robust, dmean])
    norm = torch.linalg.vector_norm(vec)
    if norm > 0:
        vec = vec / norm
    return vec.contiguous()


def music2latent_features(latent: torch.Tensor) -> torch.Tensor:
    """Music2Latent latent -> [3*C, T]: re/im interleaved per channel (2C rows) + magnitudes (C).

    Accepts [C, T] (the mono quirk: taken as the real part with a zero imaginary part),
    [1, C, T] (``encode`` of a mono file; squeezed to [C, T] first) or [2, C, T] (re, im).
    """
    latent = latent.detach().to(torch.float32)
    if latent.dim() == 3 and latent.shape[0] == 1:
        latent = latent[0]
    if latent.dim() == 2:
        latent = torch.stack([latent, torch.zeros_like(latent)])
    if latent.dim() != 3 or latent.shape[0] != 2:
        raise ValueError(f"expected a latent [C, T], [1, C, T] or [2, C, T], got {tuple(latent.shape)}")
    _, channels, frames = latent.shape
    interleaved = latent.permute(1, 0, 2).reshape(2 * channels, frames)
    magnitude = torch.sqrt(latent[0] ** 2 + latent[1] ** 2 + MAG_EPS)
    return torch.cat([interleaved, magnitude], dim=0)


def window_starts(total: int, chunk: int, hop: int) -> list[int]:
    """Window start samples; the last window is aligned to the end of the track."""
    if chunk <= 0 or hop <= 0:
        raise ValueError(f"chunk and hop must be positive, got chunk={chunk} hop={hop}")
    if total < 0:
        raise ValueError(f"negative track length {total}")
    last = max(total - chunk, 0)
    starts = list(range(0, last + 1, hop))
    if not starts or starts[-1] + chunk < total:
        starts.append(last)
    return starts


def cut_windows(mono: torch.Tensor, chunk: int, hop: int) -> list[torch.Tensor]:
    """Windows of exactly ``chunk`` samples (short ones zero-padded at the end)."""
    total = int(mono.shape[-1])
    out = []
    for start in window_starts(total, chunk, hop):
        piece = mono[start : start + chunk]
        if piece.shape[-1] < chunk:
            piece = torch.nn.functional.pad(piece, (0, chunk - piece.shape[-1]))
        out.append(piece)
    return out


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """[samples] or [channels, samples] -> [samples] float32 (mean over channels)."""
    if waveform.dim() == 1:
        return waveform.to(torch.float32)
    if waveform.dim() == 2:
        if waveform.shape[0] == 1:  # the mean of one channel is that channel, without a pass
            return waveform[0].to(torch.float32)
        return waveform.to(torch.float32).mean(dim=0)
    raise ValueError(f"expected a waveform [samples] or [channels, samples], got {tuple(waveform.shape)}")


def prepare_waveform(waveform: torch.Tensor, sample_rate: int, target_rate: int) -> torch.Tensor:
    """Mono by channel mean, then resample to the model rate (the sidecar's order)."""
    mono = to_mono(torch.as_tensor(waveform))
    if int(sample_rate) != int(target_rate):
        mono = resample(mono, int(sample_rate), int(target_rate))
    return mono.contiguous()
