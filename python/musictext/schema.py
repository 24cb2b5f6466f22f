"""The unified record schemas shared by every stage (file names and directories: ``layout``)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

SPLITS = ("train", "valid", "test")
# Training curriculum phase of a clip (``phase`` column): stage 1 trains on short clips, stage 2
# on full songs (whole tracks, whose targets' robust and dmean blocks span many windows).
CLIP_PHASE, SONG_PHASE = 1, 2
PHASES = (CLIP_PHASE, SONG_PHASE)

# One row per source track in a raw shard (JSON lines). ``path`` is relative to the shard dir.
TRACK_FIELDS = ("track_id", "source", "split", "path", "captions", "tags", "licence")

# A clip's audio files ("renderings"), each what one kind of upload path reads:
# - "native": the clip's samples as decoded from the source (its rate, all its channels), lossless;
#   MuQ-MuLan and MERT load it as Navidrome loads a file (librosa: channel mean, soxr_hq to 24 kHz),
#   Music2Latent with ``m2l_native_rate`` encodes it as is.
# - "mono24k": exactly what librosa.load(<the native clip file>, sr=24000, mono=True) returns,
#   stored losslessly; loading it the same way again returns the same samples, so MuQ-MuLan and
#   MERT (librosa loader) get the native file's vectors without resampling in the GPU task.
# - "stereo44k": 44.1 kHz two-channel (a mono source as L = R), what Music2Latent's upload path
#   stores for the usual library file.
RENDERINGS = ("native", "mono24k", "stereo44k")
# The fixed rate of each resampled rendering ("native" keeps its source's).
RENDERING_RATES = {"mono24k": 24000, "stereo44k": 44100}
AUDIO_REF = pa.struct(
    [("rendering", pa.string()), ("sample_rate", pa.int32()), ("channels", pa.int32()), ("path", pa.string())]
)

CLIP_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),  # "<track_id>#<clip index>"
        ("track_id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),
        # One file per rendering the chosen families need; path relative to the shard dir.
        ("audio", pa.list_(AUDIO_REF)),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("captions", pa.list_(pa.string())),
        ("tags", pa.list_(pa.string())),
        ("licence", pa.string()),
        ("phase", pa.int8()),  # PHASES; read it with ``phase_column``
    ]
)

TEXT_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("split", pa.string()),
        ("caption_index", pa.int32()),
        ("text", pa.string()),  # cleaned caption
        ("input_ids", pa.list_(pa.int32())),  # tokenised, truncated, unpadded
        ("phase", pa.int8()),  # the clip's PHASES value; read it with ``phase_column``
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


def phase_column(table: pa.Table) -> pa.ChunkedArray:
    """The ``phase`` of every row of a clips or text table, int8. Tables written before the
    column existed, and rows without a value, are short clips (CLIP_PHASE): every source of
    that time was cut into clips. ValueError for a value outside PHASES."""
    if "phase" not in table.column_names:
        return pa.chunked_array([pa.array([CLIP_PHASE] * table.num_rows, pa.int8())])
    column = pc.fill_null(table["phase"], CLIP_PHASE).cast(pa.int8())
    bad = pc.unique(pc.filter(column, pc.invert(pc.is_in(column, pa.array(PHASES, pa.int8()))))).to_pylist()
    if bad:
        raise ValueError(f"phase values {sorted(bad)} are not among {PHASES}")
    return column


def audio_ref_for(audio_refs: list[dict], rendering: str) -> dict:
    """The ``rendering`` entry ({rendering, sample_rate, channels, path}) of a CLIP_SCHEMA ``audio`` cell."""
    for ref in audio_refs:
        if ref["rendering"] == rendering:
            return ref
    have = sorted(r["rendering"] for r in audio_refs)
    raise KeyError(f"no {rendering!r} rendering of this clip (have {have})")
