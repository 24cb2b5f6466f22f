"""Typed rows of the files one stage hands the next, checked by every stage that reads them.

- ``TrackRow``: a raw shard's manifest.jsonl row (``schema.TRACK_FIELDS`` and the record's
  cutting fields), read by the clip stage (``read_manifest``).
- ``ClipRow``: a clip shard's clips.parquet row (``schema.CLIP_SCHEMA``), read by the index
  (merge) step; ``ClipAudio`` and ``ClipCaptions`` are the parts the embedding and text stages
  read (``read_clip_rows``).

A row that fails (a mistyped field, ``captions: 5``, an audio path that leaves its shard, a line
that is not UTF-8 or not JSON) is rejected under its id (or ``file:line``) with the reason, and
the stage goes on with the others. Audio paths are relative to their shard directory: an
absolute path, a URL or a ``..`` that leaves the shard is refused.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection
from typing import Annotated, Literal, TypeVar

import pyarrow as pa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic.functional_validators import AfterValidator

from musictext import layout, schema, storage
from musictext.rejects import ItemError, Rejections, json_lines, utf8_text

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Split = Literal["train", "valid", "test"]
assert set(Split.__args__) == set(schema.SPLITS)


# ----------------------------------------------------------------------------- paths


def _absolute(path: str) -> bool:
    """Whether ``path`` is absolute, a URL (``file:`` and ``data:`` need no "//") or a drive path."""
    return "://" in path or path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":") \
        or path.lower().startswith(("file:", "data:"))


def relative_path(rel: str) -> str:
    """``rel`` normalised, when it stays inside the directory it is relative to. ValueError for
    an absolute path, a URL, a drive path or a ``..`` that leaves the directory. The normalised
    path is checked too ("a/../c:x"), so a path this returns passes again unchanged: readers of
    checked rows just join it onto their directory."""
    norm = posixpath.normpath(rel.replace("\\", "/"))
    if _absolute(rel) or _absolute(norm):
        raise ValueError(f"path {rel!r} is absolute or a URL")
    if norm in ("..", ".") or norm.startswith("../"):
        raise ValueError(f"path {rel!r} leaves its directory")
    return norm


def confined(root: str, rel: str, item: str, where: str = "the folder") -> str:
    """``root``/``rel`` when ``rel`` stays inside ``root``; ItemError for an absolute path, a URL
    or a ``..`` that would leave it."""
    try:
        norm = relative_path(rel)
    except ValueError as err:
        raise ItemError(item, f"{err}: outside {where}") from None
    return storage.join(root, norm)


def _captions(value: list[str]) -> list[str]:
    kept = [c.strip() for c in value if c.strip()]
    if not kept:
        raise ValueError("no non-blank captions")
    return kept


# An audio file's path, relative to its shard dir (normalised by relative_path).
AudioPath = Annotated[str, StringConstraints(min_length=1), AfterValidator(relative_path)]
# Captions with the blank ones dropped; at least one left.
Captions = Annotated[list[str], AfterValidator(_captions)]


# ----------------------------------------------------------------------------- rows


class _Row(BaseModel):
    # Strict: "5" is not a number, 5 not a caption list; fields a later writer adds are ignored.
    model_config = ConfigDict(strict=True, extra="ignore")


class TrackRow(_Row):
    """A manifest row: one fetched track and how the clip stage cuts it."""

    track_id: NonEmpty
    source: str
    split: Split
    path: AudioPath  # relative to the raw shard dir
    captions: Captions
    tags: list[str] = []
    licence: str
    start_s: Seconds | None = None
    end_s: Seconds | None = None
    clip_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    max_clips: Annotated[int, Field(ge=1)] | None = None
    whole_track: bool = False
    phase: Literal[1, 2] | None = None
    origin: str | None = None  # where the download came from, for people reading a rejection


class AudioRef(_Row):
    """One rendering file of a clip (``schema.AUDIO_REF``)."""

    rendering: Literal[schema.RENDERINGS]
    sample_rate: Annotated[int, Field(gt=0)]
    channels: Annotated[int, Field(ge=1)]
    path: AudioPath  # relative to the clip shard dir


class _Clip(_Row):
    clip_id: NonEmpty
    split: Split


class ClipAudio(_Clip):
    """What the embedding stage reads of a clip."""

    audio: list[AudioRef]


class ClipCaptions(_Clip):
    """What the text stage reads of a clip. A shard written before ``phase`` existed, or a row
    without one, holds short clips (schema.CLIP_PHASE)."""

    captions: list[str]
    phase: Literal[1, 2] = schema.CLIP_PHASE

    @field_validator("phase", mode="before")
    @classmethod
    def _legacy_phase(cls, value):
        return schema.CLIP_PHASE if value is None else value


class ClipRow(ClipAudio, ClipCaptions):
    """A whole clips.parquet row, as the index (merge) step checks it."""

    track_id: NonEmpty
    source: str
    start_s: Seconds
    end_s: Seconds
    tags: list[str] = []
    licence: str


Row = TypeVar("Row", bound=_Row)


def _why(error: dict) -> str:
    """One refused field as "field: reason (got value)", the value cut short."""
    where = ".".join(str(p) for p in error["loc"]) or "row"
    why = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, (dict, list)) or "got" in why or "path" in why:
        return f"{where}: {why}"
    shown = repr(value)
    return f"{where}: {why} (got {shown[:40]}{'...' if len(shown) > 40 else ''})"


def validate_row(model: type[Row], row: dict, item: str, what: str = "row") -> Row:
    """``row`` as ``model``, or ItemError naming ``item`` and every field that is wrong
    ("<what> lacks [...]" when fields are only missing)."""
    try:
        return model.model_validate(row)
    except ValidationError as err:
        errors = err.errors()
        missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
        if missing and len(missing) == len(errors):
            raise ItemError(item, f"{what} lacks {missing}") from None
        raise ItemError(item, f"bad {what}: " + "; ".join(_why(e) for e in errors)) from None


def row_name(row: dict, key: str, fallback: str) -> str:
    """The id a rejection names a row by: its ``key`` when that is a non-empty string."""
    value = row.get(key)
    return value if isinstance(value, str) and value else fallback


# ----------------------------------------------------------------------------- readers


def read_manifest(raw_dir: str, rejections: Rejections) -> tuple[list[TrackRow], int]:
    """A raw shard's valid manifest rows, the first of each track id (later ones rejected), and
    the number of entries (non-blank lines) the manifest holds. Decoded strictly: a line that is
    not UTF-8 is rejected with its byte offset, never read with replacement characters."""
    uri = storage.join(raw_dir, layout.MANIFEST)
    if not storage.exists(uri):
        raise FileNotFoundError(f"raw shard {raw_dir} has no {layout.MANIFEST}")
    data = storage.read_bytes(uri)
    entries = sum(1 for line in data.splitlines() if line.strip())
    rows, seen = [], set()
    for item, raw in json_lines(utf8_text(data, layout.MANIFEST, rejections), layout.MANIFEST, rejections,
                                what="manifest row"):
        name = row_name(raw, "track_id", item)
        try:
            row = validate_row(TrackRow, raw, name, what="manifest row")
        except ItemError as err:
            rejections.add(err.item, err.reason)
            continue
        if row.track_id in seen:
            rejections.add(row.track_id, f"duplicate track id ({item})")
            continue
        seen.add(row.track_id)
        rows.append(row)
    return rows, entries


def clip_table(shard_dir: str) -> pa.Table:
    """A clip shard's clips.parquet, every column as written (FileNotFoundError without one)."""
    uri = storage.join(shard_dir, layout.CLIPS)
    if not storage.exists(uri):
        raise FileNotFoundError(f"clip shard {shard_dir} has no {layout.CLIPS}")
    return storage.read_parquet(uri)


def _pylist(table: pa.Table, shard_dir: str, rejections: Rejections) -> list[dict | None]:
    """The table's rows as dicts; a row whose strings are not UTF-8 is rejected (None) instead
    of failing the whole shard."""
    try:
        return table.to_pylist()
    except UnicodeDecodeError:
        rows: list[dict | None] = []
        for i in range(table.num_rows):
            try:
                rows.append(table.slice(i, 1).to_pylist()[0])
            except UnicodeDecodeError as err:
                rejections.add(f"{shard_dir}/{layout.CLIPS}:row {i}", f"not valid UTF-8 ({err.reason} at byte "
                                                                      f"{err.start} of a string)")
                rows.append(None)
        return rows


def read_clip_rows(shard_dir: str, model: type[Row], rejections: Rejections,
                   skip: Collection[str] = ()) -> list[Row]:
    """A clip shard's rows that are valid ``model``s (ClipRow, ClipAudio, ClipCaptions); each
    other row is rejected under its clip id (or ``shard/clips.parquet:row N``) with the reason.
    Rows whose clip id is in ``skip`` (dropped, and recorded, by an earlier step) are left out
    unchecked."""
    table = clip_table(shard_dir)
    kept = []
    for i, raw in enumerate(_pylist(table, shard_dir, rejections)):
        if raw is None or raw.get("clip_id") in skip:
            continue
        try:
            item = row_name(raw, "clip_id", f"{shard_dir}/{layout.CLIPS}:row {i}")
            kept.append(validate_row(model, raw, item, what="clip row"))
        except ItemError as err:
            rejections.add(err.item, err.reason)
    return kept
