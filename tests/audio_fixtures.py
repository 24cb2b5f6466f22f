"""Generated audio and clip shards in the real CLIP_SCHEMA layout, shared by tests and benches."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from musictext import layout, schema
from musictext.clip.cut import DEFAULT_CLIP_FORMAT, encode_clip


def tone(f0: float, sr: int, secs: float, amp: float = 0.3, harmonics: int = 6, bpm: float = 120.0) -> np.ndarray:
    t = np.arange(int(secs * sr)) / sr
    x = sum(np.sin(2 * math.pi * f0 * k * t) / k for k in range(1, harmonics + 1) if f0 * k < sr / 2)
    env = (1 - (t * bpm / 60) % 1) ** 2
    return (amp * x * env).astype(np.float32)


def make_clip_shard(shard_dir: str | Path, clips: list[dict]) -> Path:
    """Write a clips shard: clips.parquet (CLIP_SCHEMA) + audio/<rate>/<name>.<ext>.

    Each clip dict: clip_id, split, and ``audio``: {rate: np.ndarray | bytes} (bytes are written
    verbatim, for broken files; a rate mapped to None is listed but not written).
    Arrays are encoded as the clip stage does (``format``: wav or flac, default wav), unless the
    clip names a soundfile ``subtype`` and ``ext`` (float WAV, for NaN and empty files).
    """
    shard = Path(shard_dir)
    rows = []
    for clip in clips:
        refs = []
        name = clip["clip_id"].replace("#", "_")
        for rate, data in clip["audio"].items():
            fmt = clip.get("format", DEFAULT_CLIP_FORMAT)
            rel = f"audio/{rate}/{name}.{clip.get('ext', fmt)}"
            path = shard / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                path.write_bytes(data)
            elif "subtype" in clip:
                sf.write(path, data, rate, subtype=clip["subtype"])
            elif data is not None:
                path.write_bytes(encode_clip(data, rate, fmt)[0])
            refs.append({"sample_rate": int(rate), "path": rel})
        track = clip["clip_id"].split("#")[0]
        rows.append(
            {
                "clip_id": clip["clip_id"],
                "track_id": track,
                "source": "synthetic",
                "split": clip.get("split", "train"),
                "audio": refs,
                "start_s": 0.0,
                "end_s": 1.0,
                "captions": [f"a test tone {clip['clip_id']}"],
                "tags": [],
                "licence": "CC0",
            }
        )
    shard.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.CLIP_SCHEMA), shard / layout.CLIPS)
    return shard
