"""Captions joined with their audio targets on clip_id, per split (what training and evaluation read)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from musictext import layout, storage

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    clip_ids: list[str]
    captions: list[list[str]]  # per clip, in caption_index order
    token_ids: list[list[list[int]]]  # per clip, per caption
    targets: np.ndarray  # [N, dim] float32, row i belongs to clip_ids[i]

    def __len__(self) -> int:
        return len(self.clip_ids)

    def first_captions(self) -> list[str]:
        return [c[0] for c in self.captions]


def _only(table: pa.Table, split: str) -> pa.Table:
    return table.filter(pc.equal(table["split"], split))


def _read_targets_table(targets_dir: str) -> pa.Table:
    columns = ["clip_id", "split", "target"]
    return pa.concat_tables(storage.read_parquet(uri, columns=columns) for uri in layout.target_files(targets_dir))


def _target_arrays(table: pa.Table) -> tuple[list[str], np.ndarray]:
    ids = table["clip_id"].to_pylist()
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32)
    col = table["target"].combine_chunks()
    dim = col.type.list_size
    values = col.flatten().to_numpy(zero_copy_only=False)
    return ids, values.reshape(len(ids), dim).astype(np.float32, copy=False)


def _join(text: pa.Table, targets: pa.Table, split: str, max_length: int | None) -> SplitData:
    text = text.sort_by([("clip_id", "ascending"), ("caption_index", "ascending")])
    by_clip: dict[str, tuple[list[str], list[list[int]]]] = {}
    for cid, cap, ids in zip(
        text["clip_id"].to_pylist(), text["text"].to_pylist(), text["input_ids"].to_pylist()
    ):
        caps, toks = by_clip.setdefault(cid, ([], []))
        caps.append(cap)
        toks.append(list(ids[:max_length]) if max_length else list(ids))
    target_ids, values = _target_arrays(targets)
    keep = [i for i, cid in enumerate(target_ids) if cid in by_clip]
    missing_text = len(target_ids) - len(keep)
    missing_target = len(set(by_clip) - set(target_ids))
    if missing_text or missing_target:
        log.warning(
            "%s: %d clips without captions, %d captions-only clips skipped",
            split, missing_text, missing_target,
        )
    clip_ids = [target_ids[i] for i in keep]
    return SplitData(
        clip_ids=clip_ids,
        captions=[by_clip[c][0] for c in clip_ids],
        token_ids=[by_clip[c][1] for c in clip_ids],
        targets=values[keep],  # [0, dim] (or [0, 0] without any target) when nothing is kept
    )


def load_splits(
    text_dir: str, targets_dir: str, splits: tuple[str, ...], max_length: int | None = None
) -> dict[str, SplitData]:
    """Join captions and targets on clip_id for each split; clips lacking either side are
    skipped (logged). Every file is read once, however many splits are asked for."""
    text = storage.read_parquet(
        storage.join(text_dir, layout.TEXT), columns=["clip_id", "split", "caption_index", "text", "input_ids"]
    )
    targets = _read_targets_table(targets_dir)
    return {split: _join(_only(text, split), _only(targets, split), split, max_length) for split in splits}


def load_split(text_dir: str, targets_dir: str, split: str, max_length: int | None = None) -> SplitData:
    return load_splits(text_dir, targets_dir, (split,), max_length)[split]


def target_dim(targets_dir: str) -> int:
    return int(storage.read_json(storage.join(targets_dir, layout.META))["target_dim"])
