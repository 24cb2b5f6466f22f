"""The unified record: one dataset item, parsed from the dataset's published metadata, before any
audio is downloaded (``musictext datasets records`` prints these, one JSON object per line).

A record says what the item is (captions, tags, licence, split), where its audio comes from
(``audio``: a YouTube id, a URL, an archive member, a path in a library, or a generated piece) and
which span of that audio it is (``start_s``/``end_s``; null for a whole track). ``group`` is the
recording's key across sources (``yt:<id>``, ``jamendo:<track>``): records sharing a group always
land in one split, and records of one group and span are one item (``splits.merge_duplicates``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from musictext import schema, storage
from musictext.rejects import ItemError, describe_validation

# Ids become file names under a shard dir: nothing that could leave it ("/", "..", a drive).
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def safe_id(text: str) -> str:
    """``text`` (a file stem, a path, a dataset's own id) with every character an id may not
    hold (``SAFE_ID``) replaced by "_", for building a source's track ids."""
    return _UNSAFE.sub("_", text)


class _Audio(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class YouTubeAudio(_Audio):
    """A YouTube video's audio, fetched with yt-dlp (the record's span is the segment)."""

    kind: Literal["youtube"] = "youtube"
    ytid: str = Field(min_length=1)


class UrlAudio(_Audio):
    """One file over HTTP(S); checksums where the dataset publishes them."""

    kind: Literal["url"] = "url"
    url: str = Field(min_length=1)
    size: int | None = None
    sha256: str | None = None
    sha1: str | None = None


class ArchiveAudio(_Audio):
    """A member of a published tar/zip archive. Several ``urls`` are parts of one archive that
    are concatenated first (MagnaTagATune's ``mp3.zip.001..003``)."""

    kind: Literal["archive"] = "archive"
    urls: tuple[str, ...] = Field(min_length=1)
    member: str = Field(min_length=1)
    format: Literal["tar", "zip"]
    size: int | None = None  # of the (joined) archive
    sha256: str | None = None
    sha1: str | None = None
    member_sha256: str | None = None
    member_sha1: str | None = None


class PathAudio(_Audio):
    """A file in a library the user supplies: a path (or bucket URI) relative to ``root``."""

    kind: Literal["path"] = "path"
    root: str = Field(min_length=1)
    path: str = Field(min_length=1)


class GeneratedAudio(_Audio):
    """Rendered on the fly (the synthetic corpus): a pure function of (seed, index) and which
    sequence the index counts in, the short pieces or the full songs."""

    kind: Literal["generated"] = "generated"
    seed: int = Field(ge=0)
    index: int = Field(ge=0)
    piece: Literal["clip", "song"] = "clip"


Audio = Annotated[
    Union[YouTubeAudio, UrlAudio, ArchiveAudio, PathAudio, GeneratedAudio], Field(discriminator="kind")
]


class Record(BaseModel):
    """One item of a source, as every stage after parsing sees it."""

    model_config = ConfigDict(extra="forbid")

    track_id: str  # stable and unique within the source; prefixed with the source name
    source: str
    split: Literal["train", "valid", "test"]
    captions: list[str] = Field(min_length=1)
    tags: list[str] = []
    licence: str = Field(min_length=1)
    audio: Audio
    start_s: float | None = Field(default=None, ge=0)
    end_s: float | None = None
    group: str = Field(min_length=1)
    # How the clip stage cuts it: fixed windows of ``clip_seconds`` (at most ``max_clips``), or
    # the whole span as one clip (phase 2, full songs). None: the pipeline's clip_seconds.
    clip_seconds: float | None = Field(default=None, gt=0)
    max_clips: int | None = Field(default=None, ge=1)
    whole_track: bool = False
    # Training curriculum: 1 short clip (stage 1), 2 full song (stage 2). Unset: a whole-track
    # item is a full song, anything cut into windows a clip (what every built-in source means).
    phase: Literal[1, 2] | None = None
    meta: dict[str, Any] = {}  # source extras a person may want (artist, title, duration_s, bpm)

    @field_validator("track_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not SAFE_ID.fullmatch(value):
            raise ValueError(f"track id {value!r} is empty or has characters other than A-Za-z0-9._+-")
        return value

    @field_validator("captions")
    @classmethod
    def _non_blank(cls, value: list[str]) -> list[str]:
        kept = [c.strip() for c in value if c and c.strip()]
        if not kept:
            raise ValueError("no non-blank caption")
        return kept

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(t.strip() for t in value if t and t.strip()))

    @model_validator(mode="after")
    def _span(self) -> Record:
        if self.end_s is not None and self.end_s <= (self.start_s or 0.0):
            raise ValueError(f"end_s {self.end_s} is not after start_s {self.start_s}")
        return self

    @model_validator(mode="after")
    def _phase(self) -> Record:
        if self.phase is None:
            self.phase = schema.SONG_PHASE if self.whole_track else schema.CLIP_PHASE
        return self

    def row(self) -> dict:
        return self.model_dump(mode="json")


def origin(audio) -> str:
    """Where an item's audio came from, for people reading a rejection."""
    if isinstance(audio, YouTubeAudio):
        return f"youtube:{audio.ytid}"
    if isinstance(audio, UrlAudio):
        return audio.url
    if isinstance(audio, ArchiveAudio):
        return f"{audio.urls[0]}!{audio.member}"
    if isinstance(audio, PathAudio):
        return storage.join(audio.root, audio.path)
    song = ":song" if audio.piece == "song" else ""
    return f"{audio.kind}:{audio.seed}:{audio.index}{song}"


def make_record(item: str, **fields) -> Record:
    """A validated Record, or ItemError naming ``item`` and every invalid field."""
    try:
        return Record(**fields)
    except ValidationError as err:
        raise ItemError(item, describe_validation(err)) from None


def parse_row(line: str, item: str) -> Record:
    """A record from one JSON line; ItemError for bad JSON or an invalid record."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise ItemError(item, f"not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise ItemError(item, "record is not a JSON object")
    return make_record(str(data.get("track_id") or item), **data)


def write_records(uri: str, records: Iterable[Record]) -> int:
    """Write records as JSON lines, atomically; the count."""
    rows = [r.row() for r in records]
    storage.write_jsonl(uri, rows)
    return len(rows)


def read_records(uri: str) -> Iterator[Record]:
    """Records of a JSON-lines file (written by ``write_records``; trusted, so errors raise)."""
    for row in storage.read_jsonl(uri):
        yield Record(**row)


def dump_line(record: Record) -> str:
    return json.dumps(record.row(), ensure_ascii=False)


assert set(schema.SPLITS) == {"train", "valid", "test"}  # Record.split's Literal mirrors it
