"""The unified record schemas shared by every stage (file names and directories: ``layout``)."""

from __future__ import annotations

import pyarrow as pa

SPLITS = ("train", "valid", "test")

# One row per source track in a raw shard (JSON lines). ``path`` is relative to the shard dir.
TRACK_FIELDS = ("track_id", "source", "split", "path", "captions", "tags", "licence")

AUDIO_REF = pa.struct([("sample_rate", pa.int32()), ("path", pa.string())])

CLIP_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),  # "<track_id>#<clip index>"
        ("track_id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        # One mono, fixed-length clip per model sample rate; path relative to the shard dir.
        ("audio", pa.list_(AUDIO_REF)),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("captions", pa.list_(pa.string())),
        ("tags", pa.list_(pa.string())),
        ("licence", pa.string()),
    ]
)

TEXT_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("split", pa.string()),
        ("caption_index", pa.int32()),
        ("text", pa.string()),  # cleaned caption
        ("input_ids", pa.list_(pa.int32())),  # tokenised, truncated, unpadded
    ]
)


def target_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    """Targets are fixed-size lists so readers get a [N, dim] array without copying."""
    value = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema(
        [
            ("clip_id", pa.string()),
            ("split", pa.string()),
            ("target", pa.list_(value, dim)),
        ]
    )


def audio_path_for(audio_refs: list[dict], sample_rate: int) -> str:
    """The clip file rendered at ``sample_rate`` from a CLIP_SCHEMA ``audio`` cell."""
    for ref in audio_refs:
        if int(ref["sample_rate"]) == int(sample_rate):
            return ref["path"]
    have = sorted(int(r["sample_rate"]) for r in audio_refs)
    raise KeyError(f"no clip at {sample_rate} Hz (have {have})")
