"""Decode audio files the way Navidrome's upload path does (runs in worker threads).

Three loaders, one per kind of upload path (navidrome-contract.md, "What is actually stored"):
- ``load_librosa``: ``librosa.load(file, sr=rate, mono=True)`` -- soundfile first (audioread
  only for what libsndfile cannot read), channel mean, soxr_hq resampling. MERT always, and
  MuQ-MuLan with a current torchaudio.
- ``load_torchaudio_like``: what MuQ-MuLan did with torchaudio < 2.9: ``torchaudio.load`` (here
  soundfile, which decodes WAV/FLAC/OGG/MP3 to the same float32 samples), channel mean, then
  ``torchaudio.functional.resample`` with default arguments (``musictext.audio.resample``).
- ``load_channels``: ``soundfile.read(file, dtype="float32", always_2d=True)``, every channel at
  the file's own rate: what music2latent's ``encode(path)`` reads.

A bucket URI is read into memory and decoded from there the same way (audioread, librosa's
fallback, needs a path, so a bucket file must be in a format libsndfile reads).
soundfile, soxr and torch's convolution release the GIL, so a thread pool decodes while the
main thread runs the model.

``open_audio`` serves a reader that needs only part of a long file (the clip stage): it decodes
just the span asked for, so memory follows the span, not the file; a bucket object is fetched
block by block as libsndfile reads it.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from musictext import storage
from musictext.audio.features import prepare_waveform, to_mono
from musictext.lazy import lazy_module
from musictext.rejects import ItemError

torch = lazy_module("torch")  # the clip stage decodes through this module without torch

# A decoded file or clip peaking below this (about -120 dBFS) is silent: nothing to embed.
SILENT_FILE_PEAK = 1e-6
# Containers whose libsndfile seek lands on the exact frame, so a span decoded after a seek holds
# the samples a whole-file decode holds there: PCM (position arithmetic) and FLAC (libFLAC seeks to
# the sample). Any other is decoded from its start in one read and the frames before the span are
# dropped, so memory follows the span's end rather than its length. Measured with libsndfile
# 1.2.2: in a pure-tone VBR MP3 its seek lands thousands of frames off, and a read that follows
# an earlier read returns other samples than one whole read for ~5,000 frames; a Vorbis seek after
# a read gets the first ~650 frames wrong. One read after a seek to 0 matched every time.
EXACT_SEEK_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC"})


def _source(uri: str):
    """What soundfile and librosa open: a local path, or the bytes of a bucket object."""
    if storage.is_local(uri):
        return storage.local_path(uri)
    return io.BytesIO(storage.read_bytes(uri))


@contextlib.contextmanager
def _decoding(item: str, uri: str):
    """Every decoding failure becomes an ItemError naming the item, the file and the reason."""
    if storage.is_local(uri) and not os.path.exists(storage.local_path(uri)):
        raise ItemError(item, f"audio file missing: {uri}")
    try:
        yield
    except ItemError:
        raise
    except FileNotFoundError:
        raise ItemError(item, f"audio file missing: {uri}") from None
    except Exception as err:  # LibsndfileError, audioread's errors, EOFError for garbage
        reason = getattr(err, "error_string", None) or f"{type(err).__name__}: {err}"
        raise ItemError(item, f"undecodable audio {uri}: {reason}") from None


def _opened(uri: str):
    """A local path, or an fsspec file object that fetches a bucket object in blocks as it is read."""
    if storage.is_local(uri):
        return contextlib.nullcontext(storage.local_path(uri))
    fs, path = storage.fs_for(uri)
    return fs.open(path, "rb")


@dataclass
class AudioFile:
    """An audio file open for decoding spans of it (``open_audio``)."""

    item: str
    uri: str
    sound: sf.SoundFile

    @property
    def frames(self) -> int:
        """Frames the header announces (an MP3 without a Xing header: an estimate)."""
        return int(self.sound.frames)

    @property
    def rate(self) -> int:
        return int(self.sound.samplerate)

    def read(self, start: int = 0, frames: int = -1) -> np.ndarray:
        """Frames ``start`` .. ``start + frames`` (-1: to the end) as [n, channels] float32, the
        samples a whole-file decode holds there; fewer at the file's end."""
        with _decoding(self.item, self.uri):
            if self.sound.format in EXACT_SEEK_FORMATS:
                self.sound.seek(start)
                return self.sound.read(frames, dtype="float32", always_2d=True)
            self.sound.seek(0)
            data = self.sound.read(-1 if frames < 0 else start + frames, dtype="float32", always_2d=True)
            return data[start:].copy() if start else data  # a copy, so the frames before are freed


@contextlib.contextmanager
def open_audio(item: str, uri: str) -> Iterator[AudioFile]:
    """``uri`` (local or fsspec) open for ``AudioFile.read``; nothing is decoded until then. Every
    failure to open or decode is an ItemError naming the item, the file and the reason."""
    with contextlib.ExitStack() as stack:
        with _decoding(item, uri):
            sound = stack.enter_context(sf.SoundFile(stack.enter_context(_opened(uri))))
        yield AudioFile(item, uri, sound)


def read_audio(uri: str) -> tuple[torch.Tensor, int]:
    """Any soundfile-readable file (local or fsspec URI) -> ([channels, samples] float32, rate)."""
    data, rate = sf.read(_source(uri), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


def check_waveform(item: str, audio: torch.Tensor | np.ndarray) -> None:
    """Raise ItemError for audio the sidecar would turn into a meaningless vector.

    ``audio`` is what the model is given ([samples] or [channels, samples]): a tensor, or a
    numpy array (the clip stage checks what it decoded without loading torch).
    """
    is_array = isinstance(audio, np.ndarray)
    if (audio.size if is_array else audio.numel()) == 0 or audio.shape[-1] == 0:
        raise ItemError(item, "zero-length audio")
    if is_array:
        low, high = float(audio.min()), float(audio.max())  # no copy; a NaN propagates, as in aminmax
    else:
        low, high = (float(v) for v in torch.aminmax(audio))  # one pass, no copy
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ItemError(item, "audio holds NaN or infinite samples")
    peak = max(-low, high)
    if peak < SILENT_FILE_PEAK:
        raise ItemError(item, f"all-silent audio (peak {peak:.1e})")


def decode_mono(item: str, uri: str) -> tuple[torch.Tensor, int]:
    """Decode and mono-mix one file at its own rate, checked (silence judged on the mix)."""
    with _decoding(item, uri):
        waveform, rate = read_audio(uri)
    mono = to_mono(waveform)
    check_waveform(item, mono)
    return mono, rate


def load_channels(item: str, uri: str) -> tuple[torch.Tensor, int]:
    """music2latent's read of a path: [channels, samples] float32 at the file's rate, checked."""
    with _decoding(item, uri):
        audio, rate = read_audio(uri)
    check_waveform(item, audio)
    return audio, rate


def load_librosa(item: str, uri: str, sample_rate: int) -> torch.Tensor:
    """``librosa.load(file, sr=sample_rate, mono=True)`` as a checked float32 tensor."""
    import librosa  # its scipy/numba imports cost seconds; only the embedding step needs it

    with _decoding(item, uri):
        try:
            mono, _ = librosa.load(_source(uri), sr=int(sample_rate), mono=True)
        except librosa.util.exceptions.ParameterError as err:  # e.g. NaN samples: it checks first
            raise ItemError(item, f"librosa refuses {uri}: {err}") from None
    mono = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    check_waveform(item, mono)
    return mono


# librosa.load's default resampler (soxr's "HQ" recipe), the one the upload paths use.
SOXR_QUALITY = "soxr_hq"


def soxr_resample(y: np.ndarray, orig_sr: int, target_sr: int, axis: int = -1) -> np.ndarray:
    """``librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq", axis=axis)``
    as librosa 0.11 computes it (soxr on every 1-D slice along ``axis``, then trimmed or
    zero-padded to ceil(n * ratio) samples, in ``y``'s dtype), without importing librosa: its
    scipy and numba imports cost a process ~175 MiB of RSS (docs/memory.md). Bit-identical to
    librosa's (tests/test_memory_bounds.py)."""
    import soxr  # small: the resampler librosa itself calls

    if orig_sr == target_sr:
        return y
    ratio = float(target_sr) / orig_sr  # librosa's order: the ratio first, then n * ratio (it can round up)
    n = int(np.ceil(y.shape[axis] * ratio))
    out = np.apply_along_axis(soxr.resample, axis, y, in_rate=orig_sr, out_rate=target_sr, quality=SOXR_QUALITY)
    have = out.shape[axis]
    if have > n:
        out = np.take(out, np.arange(n), axis=axis)
    elif have < n:
        pad = [(0, 0)] * out.ndim
        pad[axis] = (0, n - have)
        out = np.pad(out, pad)
    return np.asarray(out, dtype=y.dtype)


def librosa_load_array(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """[n'] float32: what ``librosa.load(f, sr=target_rate, mono=True)`` returns for a float WAV
    ``f`` holding ``audio`` ([samples, channels] float32, a float WAV stores it exactly): the
    channel mean (librosa.to_mono), then ``soxr_resample``; without importing librosa."""
    y = np.asarray(audio, dtype=np.float32).T  # librosa reads [channels, samples]
    y = np.mean(y, axis=0) if y.shape[0] > 1 else y[0]
    return np.ascontiguousarray(soxr_resample(y, int(rate), int(target_rate)), dtype=np.float32)


def load_torchaudio_like(item: str, uri: str, sample_rate: int) -> torch.Tensor:
    """torchaudio.load + channel mean + torchaudio's default resampling, checked."""
    mono, rate = decode_mono(item, uri)
    return prepare_waveform(mono, rate, int(sample_rate))
