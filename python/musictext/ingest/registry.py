"""The source registry: look sources up by name, plan every source's shards, check a shard spec.

The interface a source implements (and ``even_shards``) lives in ``base``; this module only
knows which sources exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from musictext.ingest.base import SHARD_KEYS, Source
from musictext.ingest.sources.allmusic import AllMusicSource
from musictext.ingest.sources.audioset import AudioSetSource
from musictext.ingest.sources.fma import FmaSource
from musictext.ingest.sources.folder import FolderSource
from musictext.ingest.sources.jamendo import JamendoSource
from musictext.ingest.sources.magnatagatune import MagnaTagATuneSource
from musictext.ingest.sources.msd_lastfm import MsdLastfmSource
from musictext.ingest.sources.musicbench import MusicBenchSource
from musictext.ingest.sources.musiccaps import MusicCapsSource
from musictext.ingest.sources.musicqa import MusicQASource
from musictext.ingest.sources.song_describer import SongDescriberSource
from musictext.ingest.sources.spotify import SpotifySource
from musictext.ingest.synthetic import SyntheticSource

# Every source a pipeline can use, in one explicit table. Chosen over a registration decorator
# plus module discovery because a reader, ruff and import-linter all see each source and its
# import right here, and nothing depends on which modules happen to have been imported. It
# makes no cycle: sources import ``base``, never this module. A source that needs heavy or
# optional packages imports them inside the functions that need them, so listing it here stays cheap.
# Each pipeline step is a fresh process, so a source must be in this table to run in one.
BUILTIN_SOURCES: tuple[Source, ...] = (
    SyntheticSource(),
    # phase 1: short clips
    MusicCapsSource(),
    AudioSetSource(),
    FmaSource(),
    JamendoSource(),
    MagnaTagATuneSource(),
    MusicBenchSource(),
    # phase 2: full songs
    MusicQASource(),
    SongDescriberSource(),
    MsdLastfmSource(),
    AllMusicSource(),
    SpotifySource(),
    # the user's own music
    FolderSource(),
)

_REGISTRY: dict[str, Source] = {}


def _add(source: Source) -> None:
    if not isinstance(source, Source) or not getattr(source, "name", ""):
        raise TypeError(f"{source!r} is not a named musictext.ingest.base.Source")
    if source.name in _REGISTRY:
        raise ValueError(f"source {source.name!r} is already registered")
    _REGISTRY[source.name] = source


for _source in BUILTIN_SOURCES:
    _add(_source)


@contextlib.contextmanager
def registered(source: Source) -> Iterator[Source]:
    """Make ``source`` available inside a with-block, in this process only (tests, notebooks)."""
    _add(source)
    try:
        yield source
    finally:
        del _REGISTRY[source.name]


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_source(name: str) -> Source:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown source {name!r}; known sources: {available()} "
            "(a new one is added to BUILTIN_SOURCES in musictext/ingest/registry.py)"
        ) from None


def _check_int(name: str, value, minimum: int) -> int:
    # KFP passes dict parameters through protobuf Struct, which turns every number into a
    # float (2 -> 2.0); integral floats are accepted and converted back.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def source_options(options: dict | None, name: str) -> dict:
    """One source's options from the pipeline's ``source_options`` ({source: {option: value}})."""
    value = (options or {}).get(name) or {}
    if not isinstance(value, dict):
        raise ValueError(f"source_options[{name!r}] must be a mapping of option to value, got {value!r}")
    return value


def check_sources(sources: list[str], options: dict | None = None) -> list[Source]:
    """The named sources, each with valid options: every name and option checked before any
    source lists anything (a typo fails in a second, not after an hour of another source)."""
    if not sources:
        raise ValueError("no sources given")
    duplicates = sorted({s for s in sources if list(sources).count(s) > 1})
    if duplicates:
        raise ValueError(f"sources listed more than once: {duplicates}")
    handlers = [get_source(name) for name in sources]
    unknown = sorted(set(options or {}) - set(sources))
    if unknown:
        raise ValueError(f"source_options name sources that are not used: {unknown} (sources: {sources})")
    for h in handlers:
        h.options(source_options(options, h.name))
    return handlers


def check_plan_args(corpus_size: int, shard_size: int, seed: int) -> tuple[int, int, int]:
    return (_check_int("corpus_size", corpus_size, 1), _check_int("shard_size", shard_size, 1),
            _check_int("seed", seed, 0))


def validate_shard(shard: dict) -> dict:
    """A checked copy of a shard spec with integer fields as ints; ValueError naming the fault."""
    if not isinstance(shard, dict):
        raise ValueError(f"shard spec must be a dict, got {type(shard).__name__}")
    missing = [k for k in SHARD_KEYS if k not in shard]
    if missing:
        raise ValueError(f"shard spec {shard!r} lacks {missing}")
    get_source(shard["source"])
    if not isinstance(shard["records"], str) or ".." in shard["records"].split("/"):
        raise ValueError(f"shard records {shard['records']!r} is not a relative file name")
    out = dict(shard)
    for key, minimum in (("shard", 0), ("seed", 0), ("size", 1), ("num_shards", 1)):
        out[key] = _check_int(f"shard {key}", shard[key], minimum)
    return out

