"""Generated audio and clip shards in the real CLIP_SCHEMA layout, shared by tests and benches."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from musictext import layout, schema
from musictext.clip.cut import DEFAULT_CLIP_FORMAT, encode_clip, render_clip


def tone(f0: float, sr: int, secs: float, amp: float = 0.3, harmonics: int = 6, bpm: float = 120.0) -> np.ndarray:
    t = np.arange(int(secs * sr)) / sr
    x = sum(np.sin(2 * math.pi * f0 * k * t) / k for k in range(1, harmonics + 1) if f0 * k < sr / 2)
    env = (1 - (t * bpm / 60) % 1) ** 2
    return (amp * x * env).astype(np.float32)


def _as_2d(data: np.ndarray) -> np.ndarray:
    """[samples] or [samples, channels] -> [samples, channels] float32."""
    data = np.asarray(data, dtype=np.float32)
    return data[:, None] if data.ndim == 1 else data


def renderings_of(source, rate: int, renderings=schema.RENDERINGS) -> dict:
    """{rendering: (data, rate)} as the clip stage renders a clip decoded at ``rate``
    (``musictext.clip.cut.render_clip``); bytes and None stand for every rendering alike."""
    if source is None or isinstance(source, bytes):
        return {r: (source, schema.RENDERING_RATES.get(r, rate)) for r in renderings}
    return {r: render_clip(_as_2d(source), rate, r) for r in renderings}


def _clip_audio(clip: dict) -> dict:
    """A clip's {rendering: (data, rate)}.

    ``audio`` keyed by rendering name lists the files as given; keyed by sample rate (ints: the
    clips of the former layout, one mono file per model rate) the highest-rate entry is the clip
    as decoded from its source, rendered as the clip stage does (``renderings_of``).
    """
    audio = clip["audio"]
    if all(isinstance(key, str) for key in audio):
        return dict(audio)
    rate = max(int(key) for key in audio)
    return renderings_of(audio[rate], rate)


def make_clip_shard(shard_dir: str | Path, clips: list[dict]) -> Path:
    """Write a clip shard: clips.parquet (CLIP_SCHEMA) + audio/<rendering>/<name>.<ext>.

    Each clip dict: clip_id, split, and ``audio``: {rendering: (data, rate)} where data is an
    array ([samples] or [samples, channels]), bytes (written verbatim, for broken files) or None
    (listed, not written); or {rate: data} (see ``_clip_audio``). Arrays are encoded as the clip
    stage does (``format``: wav = float WAV, the default, or flac = 24-bit), unless the clip
    names a soundfile ``subtype`` and ``ext`` (e.g. float WAV for NaN and empty files).
    A rendering's declared channel count is its array's (``channels`` for bytes/None: 2 for
    stereo44k, else 1).
    """
    shard = Path(shard_dir)
    rows = []
    for clip in clips:
        refs = []
        name = clip["clip_id"].replace("#", "_")
        fmt = clip.get("format", DEFAULT_CLIP_FORMAT)
        for rendering, (data, rate) in _clip_audio(clip).items():
            rel = f"audio/{rendering}/{name}.{clip.get('ext', fmt)}"
            path = shard / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            channels = clip.get("channels", 2 if rendering == "stereo44k" else 1)
            if isinstance(data, bytes):
                path.write_bytes(data)
            elif data is not None:
                data = _as_2d(data)
                channels = data.shape[1]
                if "subtype" in clip:
                    sf.write(path, data, rate, subtype=clip["subtype"])
                else:
                    path.write_bytes(encode_clip(data, rate, fmt)[0])
            refs.append({"rendering": rendering, "sample_rate": int(rate), "channels": int(channels), "path": rel})
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
