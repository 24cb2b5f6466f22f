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

import hashlib
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from musictext import schema, storage
from musictext.ingest.records import Record, describe_validation
from musictext.rejects import Rejections

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
        from musictext.ingest.fetch import metadata_dir  # HTTP code only when records are listed

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


def seeded_choice(key: str, options: list[str] | tuple[str, ...]) -> str:
    """One of ``options`` chosen by a hash of ``key`` (stable phrasing per item)."""
    digest = hashlib.sha256(key.encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]
