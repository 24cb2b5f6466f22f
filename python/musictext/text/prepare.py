"""Clean and tokenise the captions of every clip with the family's text-tower tokenizer."""

from __future__ import annotations

import logging
from collections import Counter

import pyarrow as pa

from musictext import layout, schema, storage
from musictext.captions import clean_caption
from musictext.config import TextConfig
from musictext.hub import resolve_pretrained
from musictext.logs import progress
from musictext.rejects import Rejections

log = logging.getLogger(__name__)

TOKENIZE_BATCH = 512
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
    batches = range(0, len(texts), TOKENIZE_BATCH)
    for start in progress(batches, desc="tokenize", total=len(batches)):
        batch = texts[start : start + TOKENIZE_BATCH]
        ids.extend(tokenizer(batch, truncation=True, max_length=max_length, padding=False)["input_ids"])
    return ids


def read_captions(clips_dirs: list[str]) -> pa.Table:
    """clip_id, split, captions and phase of every clip of the shards. Each shard is read whole:
    one written before the ``phase`` column existed lacks it (``schema.phase_column``)."""
    if not clips_dirs:
        raise ValueError("no clip shard directories given")
    tables = []
    for shard_dir in clips_dirs:
        table = layout.read_clips([shard_dir])
        try:
            phase = schema.phase_column(table)
        except ValueError as err:
            raise ValueError(f"clip shard {shard_dir}: {err}") from None
        tables.append(pa.table({"clip_id": table["clip_id"], "split": table["split"], "captions": table["captions"],
                                "phase": phase}))
    return pa.concat_tables(tables)


def _caption_rows(table: pa.Table, lowercase: bool, rejections: Rejections) -> tuple[list[dict], int]:
    rows, seen = [], set()
    for clip_id, split, captions, phase in zip(
        table["clip_id"].to_pylist(), table["split"].to_pylist(), table["captions"].to_pylist(),
        table["phase"].to_pylist(),
    ):
        if clip_id in seen:
            rejections.add(clip_id, "duplicate clip id across clip shards")
            continue
        seen.add(clip_id)
        cleaned = clean_captions(clip_id, captions, lowercase, rejections)
        if not cleaned:
            rejections.add(clip_id, "no caption left after cleaning")
            continue
        rows.extend(
            {"clip_id": clip_id, "split": split, "caption_index": i, "text": text, "phase": phase}
            for i, text in enumerate(cleaned)
        )
    return rows, len(seen)


def prepare_text(clips_dirs: list[str], out_dir: str, text_cfg: TextConfig) -> dict:
    """Write text.parquet (schema.TEXT_SCHEMA, one row per clip caption), meta.json, rejected.jsonl.

    ``caption_index`` numbers a clip's cleaned, de-duplicated captions 0, 1, ...; ``phase`` is the
    clip's (1 short clip, 2 full song), for the training curriculum.
    """
    table = read_captions(clips_dirs)
    rejections = Rejections("prepare_text")
    rows, n_clips = _caption_rows(table, text_cfg.lowercase, rejections)
    rejections.write(out_dir)
    if not rows:
        raise ValueError(f"no usable captions in {len(clips_dirs)} clip shard(s) ({n_clips} clips)")
    tokenizer = load_tokenizer(text_cfg.base_model)
    for row, ids in zip(rows, tokenize(tokenizer, [r["text"] for r in rows], text_cfg.max_length)):
        row["input_ids"] = ids
    table = pa.Table.from_pylist(rows, schema=schema.TEXT_SCHEMA)
    storage.write_parquet(storage.join(out_dir, layout.TEXT), table)
    clips_kept = len({r["clip_id"] for r in rows})
    meta = {
        "tokenizer": text_cfg.base_model,
        "tokenizer_class": type(tokenizer).__name__,
        "max_length": text_cfg.max_length,
        "lowercase": text_cfg.lowercase,
        "rows": len(rows),
        "clips": clips_kept,
        "splits": dict(Counter(r["split"] for r in rows)),
        "clips_per_phase": {str(p): n for p, n in sorted(Counter(
            r["phase"] for r in rows if r["caption_index"] == 0).items())},
        "at_max_length": sum(len(r["input_ids"]) >= text_cfg.max_length for r in rows),
    }
    storage.write_json(storage.join(out_dir, layout.META), meta)
    log.info("prepared %d captions of %d clips (%d rejected)", len(rows), clips_kept, len(rejections))
    return {"rows": len(rows), "clips": clips_kept, "clips_in": n_clips, "rejected": len(rejections)}
