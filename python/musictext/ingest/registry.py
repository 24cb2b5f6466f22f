"""The source registry: each corpus source plans its shards and downloads one shard.

A source handler is any object with a ``name`` and two methods:

- ``plan_shards(corpus_size, shard_size, seed) -> list[dict]``: JSON-serialisable shard specs
  (at least the keys of ``SHARD_KEYS``);
- ``download_shard(shard, out_dir, rejections) -> list[dict]``: write the shard's audio under
  ``out_dir`` and return its manifest rows (``schema.TRACK_FIELDS``), recording bad items in
  ``rejections`` instead of raising.

Real datasets register here the same way once they are implemented; only ``synthetic`` is.
"""

from __future__ import annotations

import math
from typing import Protocol

from musictext.ingest.synthetic import SyntheticSource
from musictext.rejects import Rejections

SHARD_KEYS = ("source", "shard", "num_shards", "start", "size", "seed")


class SourceHandler(Protocol):
    name: str

    def plan_shards(self, corpus_size: int, shard_size: int, seed: int) -> list[dict]: ...

    def download_shard(self, shard: dict, out_dir: str, rejections: Rejections) -> list[dict]: ...


_REGISTRY: dict[str, SourceHandler] = {}


def register(handler: SourceHandler) -> SourceHandler:
    if handler.name in _REGISTRY:
        raise ValueError(f"source {handler.name!r} is already registered")
    _REGISTRY[handler.name] = handler
    return handler


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_source(name: str) -> SourceHandler:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown or not yet implemented source {name!r}; available: {available()}"
        ) from None


def even_shards(source: str, corpus_size: int, shard_size: int, seed: int) -> list[dict]:
    """Consecutive index ranges of ``shard_size`` (the last one shorter) covering the corpus."""
    num = math.ceil(corpus_size / shard_size)
    return [
        {
            "source": source,
            "shard": i,
            "num_shards": num,
            "start": i * shard_size,
            "size": min(shard_size, corpus_size - i * shard_size),
            "seed": seed,
        }
        for i in range(num)
    ]


def _check_int(name: str, value, minimum: int) -> int:
    # KFP passes dict parameters through protobuf Struct, which turns every number into a
    # float (2 -> 2.0); integral floats are accepted and converted back.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def list_shards(sources: list[str], corpus_size: int, shard_size: int, seed: int) -> list[dict]:
    """Shard specs for every source; ``corpus_size`` is the number of tracks per source."""
    if not sources:
        raise ValueError("no sources given")
    duplicates = sorted({s for s in sources if list(sources).count(s) > 1})
    if duplicates:
        raise ValueError(f"sources listed more than once: {duplicates}")
    _check_int("corpus_size", corpus_size, 1)
    _check_int("shard_size", shard_size, 1)
    _check_int("seed", seed, 0)
    handlers = [get_source(name) for name in sources]  # all names checked before any planning
    return [spec for h in handlers for spec in h.plan_shards(corpus_size, shard_size, seed)]


def validate_shard(shard: dict) -> dict:
    """A checked copy of a shard spec with integer fields as ints; ValueError naming the fault."""
    if not isinstance(shard, dict):
        raise ValueError(f"shard spec must be a dict, got {type(shard).__name__}")
    missing = [k for k in SHARD_KEYS if k not in shard]
    if missing:
        raise ValueError(f"shard spec {shard!r} lacks {missing}")
    get_source(shard["source"])
    out = dict(shard)
    for key, minimum in (("shard", 0), ("start", 0), ("seed", 0), ("size", 1), ("num_shards", 1)):
        out[key] = _check_int(f"shard {key}", shard[key], minimum)
    return out


register(SyntheticSource())
