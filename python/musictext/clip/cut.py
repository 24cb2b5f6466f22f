"""Cut every track of a raw shard into mono fixed-length clips at each model sample rate.

The clip files are an intermediate that the GPU stage reads; their container is a choice
(``clip_format``):
- ``wav`` (default): 32-bit float WAV, the resampler's output exactly. Decoding is a copy
  (10 s at 44.1 kHz: ~0.3 ms on one core here, against ~2.4 ms for 24-bit WAV and ~6 ms for
  FLAC), so the decode workers never hold back a fast model.
- ``flac``: 24-bit FLAC, for when bucket space matters more than decode time (about 40% of the
  float WAV size on the synthetic corpus). Samples are rounded to the nearest 24-bit level: an
  error of at most 2**-24 of full scale, below float32's own resolution near full scale.
  Samples beyond [-1, 1] (resampler overshoot of full-scale audio) are clipped; the summary
  counts them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re

import numpy as np
import pyarrow as pa
import soundfile as sf
import torch

from musictext import layout, schema, storage
from musictext.audio.decode import decode_mono
from musictext.audio.resample import resample
from musictext.logs import progress
from musictext.rejects import ItemError, Rejections

log = logging.getLogger(__name__)

# A clip window this quiet (-80 dBFS) is a fade-out or gap, not music worth a training pair;
# whole tracks are judged by musictext.audio.decode (the embedding stage's own rule).
SILENT_WINDOW_PEAK = 1e-4
# clip_format -> soundfile (container, sample type); the format name is also the file extension.
CLIP_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}
DEFAULT_CLIP_FORMAT = "wav"
_LEVELS = 2**23  # 24-bit PCM holds integers in [-2**23, 2**23 - 1], read back as level / 2**23


# ----------------------------------------------------------------------------- paths


def resolve_audio(shard_dir: str, rel_path: str) -> str:
    """An audio path from a manifest or clips table, made usable: relative to its shard dir."""
    if "://" in rel_path or os.path.isabs(rel_path):
        return rel_path
    return storage.join(shard_dir, rel_path)


def clip_file_name(clip_id: str, clip_format: str = DEFAULT_CLIP_FORMAT) -> str:
    """A file name safe on every filesystem and bucket; the hash keeps distinct ids distinct."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id).strip("._")[:80] or "clip"
    digest = hashlib.sha1(clip_id.encode()).hexdigest()[:8]
    return f"{slug}-{digest}.{clip_format}"


# ----------------------------------------------------------------------------- manifest


def _read_manifest(raw_dir: str, rejections: Rejections) -> tuple[list[dict], int]:
    """Rows with every TRACK_FIELDS key, first occurrence of each track id (the rest rejected),
    and the number of entries (non-blank lines) the manifest holds."""
    uri = storage.join(raw_dir, layout.MANIFEST)
    if not storage.exists(uri):
        raise FileNotFoundError(f"raw shard {raw_dir} has no {layout.MANIFEST}")
    rows, seen, entries = [], set(), 0
    for line_no, line in enumerate(storage.read_bytes(uri).decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        entries += 1
        item = f"{layout.MANIFEST}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            rejections.add(item, f"not valid JSON ({err.msg})")
            continue
        if not isinstance(row, dict):
            rejections.add(item, "manifest row is not a JSON object")
            continue
        missing = [f for f in schema.TRACK_FIELDS if f not in row]
        if missing:
            rejections.add(str(row.get("track_id", item)), f"manifest row lacks {missing}")
            continue
        track_id = str(row["track_id"])
        if track_id in seen:
            rejections.add(track_id, f"duplicate track id ({item})")
            continue
        seen.add(track_id)
        rows.append(row)
    return rows, entries


def _clean_captions(track: dict) -> list[str]:
    captions = track["captions"]
    if isinstance(captions, str):
        captions = [captions]
    kept = [c.strip() for c in captions or [] if isinstance(c, str) and c.strip()]
    if not kept:
        raise ItemError(str(track["track_id"]), "no non-blank captions")
    return kept


# ----------------------------------------------------------------------------- audio


def cut_clips(
    mono: np.ndarray, rate: int, clip_seconds: float, max_clips: int, min_seconds: float
) -> list[tuple[int, int, np.ndarray, int]]:
    """(clip index, start sample, fixed-length window, samples of real audio in it).

    Windows are consecutive and do not overlap; a short final part is zero-padded when it
    holds at least ``min_seconds`` of audio and dropped otherwise.
    """
    n = int(round(clip_seconds * rate))
    out = []
    for k in range(max_clips):
        start = k * n
        part = mono[start : start + n]
        if len(part) == 0 or len(part) < min_seconds * rate:
            break
        window = np.zeros(n, dtype=np.float32)
        window[: len(part)] = part
        out.append((k, start, window, len(part)))
    return out


def encode_clip(audio: np.ndarray, rate: int, clip_format: str = DEFAULT_CLIP_FORMAT) -> tuple[bytes, int]:
    """File bytes of a float clip, and how many samples had to be clipped to fit (24-bit only)."""
    container, subtype = CLIP_FORMATS[clip_format]
    data, clipped = _pcm24(audio) if subtype == "PCM_24" else (np.asarray(audio, dtype=np.float32), 0)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=container, subtype=subtype)
    return buf.getvalue(), clipped


def _pcm24(audio: np.ndarray) -> tuple[np.ndarray, int]:
    """Nearest 24-bit levels, as the int32 soundfile writes to PCM_24 (it keeps the top 24 bits),
    and the count of samples clipped to fit. We round ourselves: libsndfile's float conversion
    floors in some containers and rounds in others."""
    levels = np.rint(np.asarray(audio, dtype=np.float64) * _LEVELS)
    clipped = int(np.count_nonzero((levels < -_LEVELS) | (levels > _LEVELS - 1)))
    return np.left_shift(np.clip(levels, -_LEVELS, _LEVELS - 1).astype(np.int32), 8), clipped


# ----------------------------------------------------------------------------- shard


def _clip_track(track, raw_dir, out_dir, rates, clip_seconds, max_clips, min_seconds, clip_format,
                rejections, stats):
    track_id = str(track["track_id"])
    captions = _clean_captions(track)
    mono_t, rate = decode_mono(track_id, resolve_audio(raw_dir, str(track["path"])))
    mono = mono_t.numpy()
    if len(mono) < min_seconds * rate:
        raise ItemError(track_id, f"too short: {len(mono) / rate:.2f} s < min_seconds {min_seconds}")
    rows = []
    for k, start, window, real in cut_clips(mono, rate, clip_seconds, max_clips, min_seconds):
        clip_id = f"{track_id}#{k}"
        if float(np.abs(window).max()) < SILENT_WINDOW_PEAK:
            rejections.add(clip_id, "silent clip")
            continue
        audio_refs = []
        source = torch.from_numpy(window)
        for new_rate in rates:
            # Straight from the source rate to each model rate, never chained.
            resampled = resample(source, rate, new_rate).numpy()
            data, clipped = encode_clip(resampled, new_rate, clip_format)
            rel = f"audio/{new_rate}/{clip_file_name(clip_id, clip_format)}"
            storage.write_bytes(storage.join(out_dir, rel), data)
            stats["clipped_samples"] += clipped
            audio_refs.append({"sample_rate": new_rate, "path": rel})
        rows.append(
            {
                "clip_id": clip_id,
                "track_id": track_id,
                "source": str(track["source"]),
                "split": str(track["split"]),
                "audio": audio_refs,
                "start_s": start / rate,
                "end_s": (start + real) / rate,  # end of real audio; the file is padded past it
                "captions": captions,
                "tags": [str(t) for t in track.get("tags") or []],
                "licence": str(track["licence"]),
            }
        )
    return rows


def _check_args(sample_rates, clip_seconds, max_clips_per_track, min_seconds, clip_format) -> list[int]:
    if clip_format not in CLIP_FORMATS:
        raise ValueError(f"clip_format must be one of {sorted(CLIP_FORMATS)}, got {clip_format!r}")
    rates = sorted({int(r) for r in sample_rates})
    if not rates or rates[0] <= 0:
        raise ValueError(f"sample_rates must be positive and non-empty, got {sample_rates}")
    if clip_seconds <= 0:
        raise ValueError(f"clip_seconds must be > 0, got {clip_seconds}")
    if max_clips_per_track < 1:
        raise ValueError(f"max_clips_per_track must be >= 1, got {max_clips_per_track}")
    if not 0 < min_seconds <= clip_seconds:
        raise ValueError(f"min_seconds must be in (0, clip_seconds], got {min_seconds}")
    return rates


def clip_shard(
    raw_dir: str,
    out_dir: str,
    sample_rates: list[int],
    clip_seconds: float,
    max_clips_per_track: int = 1,
    min_seconds: float = 1.0,
    clip_format: str = DEFAULT_CLIP_FORMAT,
) -> dict:
    """Write clips.parquet (schema.CLIP_SCHEMA), audio/<rate>/<clip>.<clip_format> and
    rejected.jsonl."""
    rates = _check_args(sample_rates, clip_seconds, max_clips_per_track, min_seconds, clip_format)
    storage.makedirs(out_dir)
    rejections = Rejections("clip")
    tracks, entries = _read_manifest(raw_dir, rejections)
    rows: list[dict] = []
    stats = {"clipped_samples": 0}
    for track in progress(tracks, desc="clip tracks"):
        try:
            rows.extend(
                _clip_track(track, raw_dir, out_dir, rates, clip_seconds, max_clips_per_track,
                            min_seconds, clip_format, rejections, stats)
            )
        except ItemError as err:
            rejections.add(err.item, err.reason)
    table = pa.Table.from_pylist(rows, schema=schema.CLIP_SCHEMA)
    storage.write_parquet(storage.join(out_dir, layout.CLIPS), table)
    rejections.write(out_dir)
    if stats["clipped_samples"]:
        log.warning("%d resampled samples exceeded full scale and were clipped",
                    stats["clipped_samples"])
    return {
        "tracks": entries,
        "clips": len(rows),
        "tracks_clipped": len({r["track_id"] for r in rows}),
        "rejected": len(rejections),
        "sample_rates": rates,
        "clip_seconds": float(clip_seconds),
        "clip_format": clip_format,
        "clipped_samples": stats["clipped_samples"],
    }
