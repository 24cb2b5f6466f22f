"""Clean and tokenise the captions of every clip with the family's text-tower tokenizer."""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from musictext import layout, schema, storage
from musictext.captions import clean_caption
from musictext.manifest import ClipCaptions, read_clip_rows
from musictext.config import TextConfig
from musictext.hub import resolve_pretrained
from musictext.logs import progress
from musictext.rejects import Rejections

log = logging.getLogger(__name__)

TOKENIZE_BATCH = 512
# Caption rows tokenised and written at a time (one Parquet row group): what text preparation
# holds besides one clip shard.
WRITE_ROWS = 8192


def clean_captions(
    clip_id: str, captions: list | None, lowercase: bool, rejections: Rejections
) -> list[str]:
    """Cleaned captions of one clip, identical ones kept once; empty ones recorded."""
    kept: list[str] = []
    for i, caption in enumerate(captions or []):
        cleaned = clean_caption(caption, lowercase)
        if not cleaned:
            rejections.add(f"{clip_id} caption {i}", "caption empty after cleaning")
        elif cleaned not in kept:
            kept.append(cleaned)
    return kept


def load_tokenizer(base_model: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_pretrained(base_model))


def tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids with the model's special tokens, truncated to ``max_length``, unpadded."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_BATCH):
        batch = texts[start : start + TOKENIZE_BATCH]
        ids.extend(tokenizer(batch, truncation=True, max_length=max_length, padding=False)["input_ids"])
    return ids


def iter_captions(clips_dirs: list[str], rejections: Rejections,
                  dropped: Mapping[str, Collection[str]] | None = None) -> Iterator[ClipCaptions]:
    """Every clip of the shards, in order, whose row is valid (``manifest.ClipCaptions``;
    a shard written before the ``phase`` column existed holds short clips), except those the
    index dropped from their shard (``dropped``: shard -> clip ids, already recorded there).
    One shard in memory at a time."""
    if not clips_dirs:
        raise ValueError("no clip shard directories given")
    dropped = dropped or {}
    for shard in progress(clips_dirs, desc="clip shards", total=len(clips_dirs)):
        yield from read_clip_rows(shard, ClipCaptions, rejections, skip=set(dropped.get(shard, ())))


def caption_rows(clips: Iterable[ClipCaptions], lowercase: bool, rejections: Rejections,
                 seen: set[str]) -> Iterator[dict]:
    """One row per cleaned caption of each clip not ``seen`` before (ids added to ``seen``)."""
    for clip in clips:
        if clip.clip_id in seen:
            rejections.add(clip.clip_id, "duplicate clip id across clip shards")
            continue
        seen.add(clip.clip_id)
        cleaned = clean_captions(clip.clip_id, clip.captions, lowercase, rejections)
        if not cleaned:
            rejections.add(clip.clip_id, "no caption left after cleaning")
            continue
        yield from (
            {"clip_id": clip.clip_id, "split": clip.split, "caption_index": i, "text": text, "phase": clip.phase}
            for i, text in enumerate(cleaned)
        )


@dataclass
class TextCounts:
    """What meta.json reports, counted as the rows stream past."""

    max_length: int
    rows: int = 0
    clips: int = 0
    at_max_length: int = 0
    splits: Counter = field(default_factory=Counter)
    clips_per_phase: Counter = field(default_factory=Counter)

    def add(self, row: dict) -> None:
        self.rows += 1
        self.splits[row["split"]] += 1
        self.at_max_length += len(row["input_ids"]) >= self.max_length
        if row["caption_index"] == 0:
            self.clips += 1
            self.clips_per_phase[str(row["phase"])] += 1


def tokenized_tables(rows: Iterator[dict], tokenizer, max_length: int, counts: TextCounts) -> Iterator[pa.Table]:
    """``rows`` with their token ids, WRITE_ROWS at a time, as TEXT_SCHEMA tables."""
    while batch := list(itertools.islice(rows, WRITE_ROWS)):
        for row, ids in zip(batch, tokenize(tokenizer, [r["text"] for r in batch], max_length)):
            row["input_ids"] = ids
            counts.add(row)
        yield pa.Table.from_pylist(batch, schema=schema.TEXT_SCHEMA)


def prepare_text(clips_dirs: list[str], out_dir: str, text_cfg: TextConfig,
                 dropped: Mapping[str, Collection[str]] | None = None) -> dict:
    """Write text.parquet (schema.TEXT_SCHEMA, one row per clip caption), meta.json, rejected.jsonl.

    ``caption_index`` numbers a clip's cleaned, de-duplicated captions 0, 1, ...; ``phase`` is the
    clip's (1 short clip, 2 full song), for the training curriculum. ``dropped``: the clips the
    shard index removed (``index.json``'s "dropped": cross-shard duplicates and bad rows, each
    recorded once there), left out here as they are left out of the gathered targets; a
    duplicate it does not name is kept once (its first shard) and rejected here.

    The captions stream through in batches of WRITE_ROWS (one row group each), so memory is a
    shard plus a batch, and the set of clip ids seen (docs/memory.md).
    """
    rejections = Rejections("prepare_text")
    seen: set[str] = set()
    counts = TextCounts(text_cfg.max_length)
    tokenizer = load_tokenizer(text_cfg.base_model)
    rows = caption_rows(iter_captions(clips_dirs, rejections, dropped), text_cfg.lowercase, rejections, seen)

    def tables() -> Iterator[pa.Table]:
        yield from tokenized_tables(rows, tokenizer, text_cfg.max_length, counts)
        if not counts.rows:  # raised inside the write: no text.parquet is left behind
            raise ValueError(f"no usable captions in {len(clips_dirs)} clip shard(s) ({len(seen)} clips)")

    try:
        storage.write_parquet_batches(storage.join(out_dir, layout.TEXT), schema.TEXT_SCHEMA, tables())
    finally:
        rejections.write(out_dir)
    meta = {
        "tokenizer": text_cfg.base_model,
        "tokenizer_class": type(tokenizer).__name__,
        "max_length": text_cfg.max_length,
        "lowercase": text_cfg.lowercase,
        "rows": counts.rows,
        "clips": counts.clips,
        "splits": dict(counts.splits),
        "clips_per_phase": dict(sorted(counts.clips_per_phase.items())),
        "at_max_length": counts.at_max_length,
    }
    storage.write_json(storage.join(out_dir, layout.META), meta)
    log.info("prepared %d captions of %d clips (%d rejected)", counts.rows, counts.clips, len(rejections))
    return {"rows": counts.rows, "clips": counts.clips, "clips_in": len(seen), "rejected": len(rejections)}
