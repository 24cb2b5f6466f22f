"""What every corpus source provides, and the helpers sources share.

A source turns "``corpus_size`` tracks of dataset X" into raw shards (``layout``: manifest.jsonl
+ audio/ + rejected.jsonl) in two steps that run in different processes (and, on a cluster, on
different pods): ``plan_shards`` once, then ``download_shard`` once per planned shard. So a
shard spec must carry everything ``download_shard`` needs, and be JSON (KFP passes it through
protobuf, which turns its ints into floats: ``registry.validate_shard`` turns them back).

``template.py`` is a small working source to copy for a new dataset.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from musictext.rejects import Rejections

# Keys every shard spec has; a source may add its own (JSON values) next to them.
SHARD_KEYS = ("source", "shard", "num_shards", "start", "size", "seed")


class Source(ABC):
    """A corpus source: subclass it, set ``name``, implement both methods, add it to the registry.

    ``download_shard`` contract:

    - write each track's audio under ``out_dir`` (through ``musictext.storage``, so buckets work)
      and return one manifest row per kept track, with exactly the keys of
      ``schema.TRACK_FIELDS``: ``track_id`` (unique across the source), ``source`` (= ``name``),
      ``split`` (one of ``schema.SPLITS``), ``path`` (relative to ``out_dir``), ``captions``
      (list of str), ``tags`` (list of str), ``licence``;
    - a bad item never fails the shard: raise ``rejects.ItemError`` for it inside a per-item
      function, catch it in the loop and ``rejections.add(err.item, err.reason)``; the item is
      then recorded in rejected.jsonl and every other item is kept;
    - be a pure function of the spec (same spec, same rows and bytes), and write each file
      atomically (``storage.write_bytes``), so a retried or resumed shard rewrites the same
      output and never leaves a half-written file behind.
    """

    name: str  # the key users pass in ``sources``, e.g. "synthetic"

    @abstractmethod
    def plan_shards(self, corpus_size: int, shard_size: int, seed: int) -> list[dict]:
        """JSON shard specs (``SHARD_KEYS`` at least) covering up to ``corpus_size`` tracks."""

    @abstractmethod
    def download_shard(self, shard: dict, out_dir: str, rejections: Rejections) -> list[dict]:
        """Write the shard's audio under ``out_dir``; return its manifest rows (see above)."""


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
