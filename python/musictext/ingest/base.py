"""What every corpus source provides, and the helpers sources share.

A source does two things, in different processes (and, on a cluster, different pods):

1. ``records``: parse the dataset's published metadata into unified ``Record``s (no audio is
   downloaded). ``musictext datasets records`` prints them; the pipeline's listing step turns
   every source's records into shards (``plan``).
2. ``fetch``: bring one record's audio into a shard directory (``download`` calls it per item).
   The default handles every ``Record.audio`` kind (YouTube through yt-dlp, HTTP with range
   resume, archive members, library paths); a source overrides it only for audio it makes.

A source module imports this module (never the registry that lists it), declares its published
files and options, and implements ``parse``. Heavy or optional packages are imported inside the
functions that need them, so listing the registry stays cheap.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import posixpath
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from musictext import schema, storage
from musictext.ingest.records import Record, describe_validation
from musictext.rejects import ItemError, Rejections, utf8_text

# Keys every shard spec has. ``records`` is the shard's record file, relative to the listing's
# records directory (the list step's output artifact).
SHARD_KEYS = ("source", "shard", "num_shards", "size", "seed", "records")
DEFAULT_SPLIT_FRACTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}


class SourceOptions(BaseModel):
    """Options every source takes (``source_options`` in the pipeline, ``--option`` on the CLI)."""

    model_config = ConfigDict(extra="forbid")

    # A directory (local or bucket URI) already holding the published metadata files; the parser
    # finds them by name anywhere below it. Unset: they are fetched from ``base_url`` into the cache.
    metadata: str | None = None
    # A mirror of the published metadata files: each is fetched as <base_url>/<file name>.
    base_url: str | None = None
    # A mirror of the published audio (URLs and archives) replacing the dataset's own base URL.
    audio_base_url: str | None = None
    # Where fetched metadata and archives are kept between shards and runs (local directory).
    cache_dir: str | None = None
    requests_per_second: float = Field(default=4.0, gt=0)
    retries: int = Field(default=5, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    # Seed of the hashed splits of sources that publish none (``hashed_split``).
    split_seed: int = Field(default=0, ge=0)

    def audio_base(self, default: str) -> str:
        """Where the audio URLs start: the ``audio_base_url`` mirror, else the dataset's own
        ``default``; without a trailing "/" (the sources append "/<name>")."""
        return (self.audio_base_url or default).rstrip("/")


class ValidFractionOptions(SourceOptions):
    """SourceOptions of a dataset that publishes a test set but no validation set."""

    # Share of the non-test groups drawn (``train_or_valid``) into "valid"; the rest is "train".
    valid_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)

    def split_of(self, group: str, test: bool) -> str:
        """"test" for an item of the published test set, else ``train_or_valid`` of its group."""
        return "test" if test else train_or_valid(group, self.split_seed, self.valid_fraction)


@dataclass(frozen=True)
class PublishedFile:
    """A metadata file the dataset publishes: its name (what the parser looks for) and URL."""

    name: str
    url: str
    required: bool = True
    aliases: tuple[str, ...] = ()  # other names the same file goes by in circulating copies
    sha256: str | None = None
    sha1: str | None = None


@dataclass
class ListContext:
    """What parsing gets besides the metadata: the corpus seed and the item limit."""

    seed: int = 0
    limit: int | None = None
    rejections: Rejections = field(default_factory=lambda: Rejections("list"))


class Source(ABC):
    """A corpus source: subclass it, set the class attributes, implement ``parse``."""

    name: ClassVar[str]  # the key users pass in ``sources``, e.g. "musiccaps"
    description: ClassVar[str] = ""
    phase: ClassVar[int] = 1  # 1: short clips (stage 1), 2: full songs (stage 2)
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    published: ClassVar[tuple[PublishedFile, ...]] = ()
    licence: ClassVar[str] = ""  # the metadata's licence, when items carry no own licence

    def options(self, raw: dict[str, Any] | None) -> SourceOptions:
        """Validated options; ValueError naming the source and every bad option."""
        try:
            return self.Options(**(raw or {}))
        except ValidationError as err:
            raise ValueError(f"source {self.name!r}: bad options: {describe_validation(err)}") from None

    def records(self, opts: SourceOptions, ctx: ListContext) -> Iterator[Record]:
        """Every record of the source; bad rows go to ``ctx.rejections`` with the reason."""
        from musictext.ingest.fetch import (
            metadata_dir,  # HTTP code only when records are listed
        )

        yield from self.parse(metadata_dir(self, opts), opts, ctx.rejections)

    @abstractmethod
    def parse(self, meta_dir: str, opts: SourceOptions, rejections: Rejections) -> Iterator[Record]:
        """Records from the published files under ``meta_dir`` (see ``find_published``)."""

    # Items fetched at once in one shard (threads; HTTP requests still obey the rate limit).
    fetch_workers: ClassVar[int] = 4

    def fetch(self, record: Record, out_dir: str, opts: SourceOptions):
        """Bring the record's audio into ``out_dir``: a ``fetch.Fetched`` (path relative to
        ``out_dir``, the record's span in that file). ItemError for a bad item (gone, corrupt,
        checksum mismatch)."""
        from musictext.ingest.fetch import fetch_audio

        return fetch_audio(record, out_dir, opts)

    def published_file(self, name: str) -> PublishedFile:
        for f in self.published:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} publishes no file {name!r}")


def find_published(meta_dir: str, names: tuple[str, ...] | list[str] | str, required: bool = True) -> str | None:
    """The first file under ``meta_dir`` (any depth) whose name is one of ``names``.

    Published archives unpack into varying layouts (``fma_metadata/tracks.csv``,
    ``data/splits/split-0/...``): the parser finds a file by its published name, not its path.
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    fs, root = storage.fs_for(meta_dir)
    found: dict[str, list[str]] = {}
    for path in sorted(fs.find(root)):
        base = posixpath.basename(path)
        if base in names:
            found.setdefault(base, []).append(path)
    for name in names:
        if name in found:
            best = min(found[name], key=lambda p: (p.count("/"), p))  # the shallowest copy
            return meta_dir if best == root else _rejoin(meta_dir, root, best)
    if required:
        raise FileNotFoundError(f"no {' or '.join(names)} under {meta_dir}")
    return None


def find_all(meta_dir: str, pattern: str) -> list[str]:
    """Every file under ``meta_dir`` whose name matches the glob ``pattern``, sorted."""
    import fnmatch

    fs, root = storage.fs_for(meta_dir)
    return [_rejoin(meta_dir, root, p) for p in sorted(fs.find(root))
            if fnmatch.fnmatch(posixpath.basename(p), pattern)]


def _rejoin(meta_dir: str, root: str, path: str) -> str:
    rel = posixpath.relpath(path, root)
    return storage.join(meta_dir, rel)


def hashed_split(key: str, seed: int, fractions: dict[str, float] | None = None) -> str:
    """A split drawn by a seeded hash of ``key`` (a group), stable across runs and machines."""
    fractions = fractions or DEFAULT_SPLIT_FRACTIONS
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for split in schema.SPLITS:
        edge += fractions.get(split, 0.0)
        if u < edge:
            return split
    return schema.SPLITS[-1]


def train_or_valid(group: str, seed: int, valid_fraction: float) -> str:
    """The split ("train" or "valid") of a non-test item of a dataset that publishes no
    validation set: ``hashed_split`` of its ``group``, ``valid_fraction`` of the groups to valid.

    Sources sharing group keys (``yt:<ytid>``: MusicCaps, AudioSet, MusicBench) draw it this way
    alike, so with the same ``split_seed`` and ``valid_fraction`` a recording in several of them
    lands in the same split in each.
    """
    return hashed_split(group, seed, {"train": 1.0 - valid_fraction, "valid": valid_fraction})


def seeded_choice(key: str, options: list[str] | tuple[str, ...]) -> str:
    """One of ``options`` chosen by a hash of ``key`` (stable phrasing per item)."""
    digest = hashlib.sha256(key.encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def archive_member(folder: str, name: str) -> str:
    """The member ``name`` inside the archive's top ``folder`` option ("" or "/": at the root)."""
    folder = folder.strip("/")
    return f"{folder}/{name}" if folder else name


def seconds_field(value: str | None, column: str, item: str) -> float:
    """A time in seconds (finite, >= 0) from a text field; ItemError naming ``item`` and the
    column otherwise (a missing field reads as empty)."""
    try:
        seconds = float((value or "").strip())
    except ValueError:
        raise ItemError(item, f"{column} {value!r} is not a number") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ItemError(item, f"{column} {value!r} is not a time in seconds")
    return seconds


def csv_rows(reader, name: str, rejections: Rejections) -> Iterator[tuple[int, Any]]:
    """(first physical line, row) of every record of a csv reader (a quoted line break makes a
    record span lines). A record the csv module cannot read is rejected under ``name:line`` and
    ends the file: where the next record starts is no longer known."""
    while True:
        first = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            rejections.add(f"{name}:{first}", f"unreadable CSV ({err}); the rest of the file is skipped")
            return
        yield first, row


# A published text file's text; a line that is not UTF-8 is rejected with its byte offset.
published_text = utf8_text


@contextmanager
def rejecting(rejections: Rejections) -> Iterator[None]:
    """Run the block; an ItemError raised in it rejects that item into ``rejections`` instead of
    ending the parse (one bad row never sinks a source). Wraps a ``yield`` of a record."""
    try:
        yield
    except ItemError as err:
        rejections.add(err.item, err.reason)


@contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local filesystem path for ``uri``, for readers that need one (zipfile, sqlite3, audio
    decoders): the file itself when local, else a temporary copy with its extension (decoders
    pick the format by it), removed on exit."""
    if storage.is_local(uri):
        yield storage.local_path(uri)
        return
    fd, tmp = tempfile.mkstemp(suffix=posixpath.splitext(uri)[1])
    os.close(fd)
    try:
        fs, path = storage.fs_for(uri)
        fs.get(path, tmp)
        yield tmp
    finally:
        os.unlink(tmp)
