"""Streaming training pairs: a node-local Arrow cache of the caption/target join, read in windows.

``build_cache`` joins text.parquet with each target Parquet file once and writes one Arrow IPC
file per target file: the clips that have captions, each with every caption's tokens and its
target exactly as stored (float16 stays float16), in blocks of ``BLOCK_ROWS`` rows. The ranks of a
node share the cache; a lock makes one of them build it and the others reuse it.

``PairStream`` is one rank's training stream. Each rank owns a fixed, seeded subset of the cache's
blocks. Per epoch it shuffles its blocks, groups consecutive ones into windows that fit the memory
budget, shuffles the rows of each window and cuts batches from the concatenation. The batch
sequence is a pure function of (index, split, batch size, rank, world, seed, epoch), so a resumed
epoch reads only the windows from the resume step on. The next window is read by a background
thread while the current one is consumed (two windows in memory, both counted in the budget).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import json
import logging
import math
import mmap
import os
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from musictext import layout, schema, storage

log = logging.getLogger(__name__)

BLOCK_ROWS = 256  # rows per Arrow record batch: the unit of sharding, shuffling and reading
CACHE_VERSION = 1  # bump when the cache's layout or contents change
INDEX_FILE = "index.json"
LOCK_FILE = ".lock"
KEY_METADATA = b"musictext.cache_key"
GIB = 1024**3
# Per-row bookkeeping of a window beyond its target and tokens: clip id string, offsets, hashes.
ROW_OVERHEAD = 128
# What the budget keeps aside for memory the allocators keep after freeing (glibc heaps of the
# consuming and loading threads, whichever Arrow pool) and small objects: measured 18-26 MiB at
# 4,096-D (flat over epochs), ~17 MiB at 76,800-D.
RUNTIME_RESERVE = 32 * 1024**2

# Tags that keep the seeded random streams apart (SeedSequence entropy).
_ASSIGN, _BLOCK_ORDER, _ROW_ORDER, _SAMPLE = 11, 12, 13, 14


# -- the index --------------------------------------------------------------------------------
@dataclass
class CacheEntry:
    """One cached target file: its Arrow file and, per block, rows per split and phase."""

    path: str
    source: str  # the target Parquet file it was built from
    key: dict
    blocks: list[dict[str, dict[int, int]]]  # blocks[b][split][phase] = rows
    captions: int = 0  # captions of all rows
    token_ints: int = 0  # tokens of all captions of all rows
    max_tokens: int = 0  # the longest caption
    dropped_duplicates: int = 0
    missing_captions: int = 0

    def block_rows(self, b: int, split: str, phases: Iterable[int] | None = None) -> int:
        """Rows of ``split`` (and ``phases``) in block ``b``."""
        counts = self.blocks[b].get(split, {})
        return sum(n for p, n in counts.items() if phases is None or p in phases)

    def rows(self, split: str, phases: Iterable[int] | None = None) -> int:
        """Rows of ``split`` (and ``phases``) in this entry."""
        return sum(self.block_rows(b, split, phases) for b in range(len(self.blocks)))

    def total_rows(self) -> int:
        """Rows of every split in this entry."""
        return sum(n for blk in self.blocks for counts in blk.values() for n in counts.values())


class Unit(NamedTuple):
    """A block of the cache as a stream sees it: rows of its split/phases only."""

    entry: int
    block: int
    rows: int
    part: int = 0  # a small dataset's blocks are cut into ``parts`` slices so every rank gets rows
    parts: int = 1

    def select(self, rows: np.ndarray) -> np.ndarray:
        """This unit's share of a block's matching row indices."""
        return rows if self.parts == 1 else np.array_split(rows, self.parts)[self.part]


UNITS_PER_RANK = 4  # fewer blocks than this per rank: cut them into slices (balance, not I/O, matters then)


def split_units(units: list[Unit], world: int) -> list[Unit]:
    """``units`` as is when there are enough to share out; else each block cut into equal slices."""
    if world == 1 or len(units) >= UNITS_PER_RANK * world:
        return units
    parts = math.ceil(UNITS_PER_RANK * world / len(units))
    out = []
    for u in units:
        sizes = [len(a) for a in np.array_split(np.arange(u.rows), parts)]
        out += [Unit(u.entry, u.block, n, k, parts) for k, n in enumerate(sizes) if n]
    return out


@dataclass
class CacheIndex:
    """What build_cache wrote: the entries, the target width and dtype, the splits it holds."""

    cache_dir: str
    dim: int
    dtype: str  # "float16" | "float32"
    block_rows: int
    max_length: int | None
    splits: tuple[str, ...]
    entries: list[CacheEntry] = field(default_factory=list)

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"split {split!r} is not in the cache at {self.cache_dir} (built: {list(self.splits)})")

    def rows(self, split: str, phases: Iterable[int] | None = None) -> int:
        """Rows (clips) of ``split``, restricted to ``phases`` when given."""
        self._check_split(split)
        phases = _phase_set(phases)
        return sum(e.rows(split, phases) for e in self.entries)

    def units(self, split: str, phases: Iterable[int] | None = None) -> list[Unit]:
        """Every block holding rows of ``split``/``phases``, in storage order."""
        self._check_split(split)
        phases = _phase_set(phases)
        return [
            Unit(i, b, n)
            for i, e in enumerate(self.entries)
            for b in range(len(e.blocks))
            if (n := e.block_rows(b, split, phases)) > 0
        ]

    @property
    def itemsize(self) -> int:
        """Bytes per target value as stored."""
        return 2 if self.dtype == "float16" else 4

    def token_stats(self) -> dict:
        """Mean tokens per caption and per clip (all captions), and the longest caption."""
        rows = sum(e.total_rows() for e in self.entries) or 1
        captions = sum(e.captions for e in self.entries) or 1
        ints = sum(e.token_ints for e in self.entries)
        return {"per_caption": ints / captions, "per_clip": ints / rows,
                "max": max((e.max_tokens for e in self.entries), default=0)}

    def to_json(self) -> dict:
        """The index.json document (entry paths relative to the cache dir)."""
        return {
            "version": CACHE_VERSION, "dim": self.dim, "dtype": self.dtype, "block_rows": self.block_rows,
            "max_length": self.max_length, "splits": list(self.splits),
            "entries": [
                {"file": os.path.basename(e.path), "source": e.source, "key": e.key,
                 "blocks": [{s: {str(p): n for p, n in c.items()} for s, c in blk.items()} for blk in e.blocks],
                 "captions": e.captions, "token_ints": e.token_ints, "max_tokens": e.max_tokens,
                 "dropped_duplicates": e.dropped_duplicates, "missing_captions": e.missing_captions}
                for e in self.entries
            ],
        }

    @classmethod
    def from_json(cls, cache_dir: str, doc: dict) -> CacheIndex:
        """Parse an index.json document written by ``to_json``."""
        entries = [
            CacheEntry(
                path=os.path.join(cache_dir, e["file"]), source=e["source"], key=e["key"],
                blocks=[{s: {int(p): int(n) for p, n in c.items()} for s, c in blk.items()} for blk in e["blocks"]],
                captions=e["captions"], token_ints=e["token_ints"], max_tokens=e["max_tokens"],
                dropped_duplicates=e["dropped_duplicates"], missing_captions=e["missing_captions"],
            )
            for e in doc["entries"]
        ]
        return cls(cache_dir, int(doc["dim"]), doc["dtype"], int(doc["block_rows"]), doc["max_length"],
                   tuple(doc["splits"]), entries)


def _phase_set(phases: Iterable[int] | None) -> frozenset[int] | None:
    return None if phases is None else frozenset(int(p) for p in phases)


def load_index(cache_dir: str) -> CacheIndex:
    """The CacheIndex of a cache dir that build_cache completed."""
    cache_dir = storage.local_path(cache_dir)
    path = os.path.join(cache_dir, INDEX_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{cache_dir} holds no {INDEX_FILE}: run build_cache first")
    with open(path) as fh:
        return CacheIndex.from_json(cache_dir, json.load(fh))


# -- building the cache ------------------------------------------------------------------------
def _file_signature(uri: str) -> dict:
    """Size and change marker (mtime, etag, ...) as fsspec reports them."""
    fs, path = storage.fs_for(uri)
    info = fs.info(path)
    sig = {"size": int(info.get("size") or 0)}
    for key in ("mtime", "etag", "generation", "updated", "LastModified", "created"):
        if info.get(key) is not None:
            sig[key] = str(info[key])
    return sig


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _entry_name(uri: str) -> str:
    """A stable cache file name per target file URI."""
    return f"{hashlib.sha1(uri.encode()).hexdigest()[:20]}.arrow"


def _target_inputs(targets_dir: str) -> tuple[int, list[str]]:
    """meta.json's target_dim and the target files, or a clear error."""
    meta_uri = storage.join(targets_dir, layout.META)
    if not storage.exists(meta_uri):
        raise FileNotFoundError(f"targets dir {targets_dir} has no {layout.META}: not a targets dataset")
    dim = int(storage.read_json(meta_uri)["target_dim"])
    files = layout.target_files(targets_dir)
    if not files:
        raise FileNotFoundError(f"targets dir {targets_dir} lists no target files")
    for uri in files:
        if not storage.exists(uri):
            raise FileNotFoundError(f"target file {uri} (of {targets_dir}) does not exist")
    return dim, files


def _target_type(uri: str, dim: int) -> pa.DataType:
    """The ``target`` column type of a target file, checked against meta.json's width."""
    fs, path = storage.fs_for(uri)
    sch = pq.read_schema(path, filesystem=fs)
    for name in ("clip_id", "split", "target"):
        if name not in sch.names:
            raise ValueError(f"target file {uri} has no {name!r} column (has {sch.names})")
    typ = sch.field("target").type
    if not pa.types.is_fixed_size_list(typ) or typ.value_type not in (pa.float16(), pa.float32()):
        raise ValueError(f"target file {uri}: 'target' is {typ}, expected fixed_size_list<float16|float32>")
    if typ.list_size != dim:
        raise ValueError(f"target file {uri} holds {typ.list_size}-D targets but meta.json says target_dim {dim}")
    return typ


def _read_text(text_uri: str, splits: tuple[str, ...], max_length: int | None) -> pa.Table:
    """clip_id, phase int8, input_ids (truncated) of the wanted splits, sorted by clip and caption."""
    fs, path = storage.fs_for(text_uri)
    names = pq.read_schema(path, filesystem=fs).names
    need = ["clip_id", "split", "caption_index", "input_ids"]
    missing = [c for c in need if c not in names]
    if missing:
        raise ValueError(f"{text_uri} lacks column(s) {missing} (has {names})")
    text = storage.read_parquet(text_uri, columns=need + (["phase"] if "phase" in names else []))
    text = text.filter(pc.is_in(text["split"], value_set=pa.array(splits, pa.string())))
    ids = text["input_ids"]
    if max_length:
        ids = pc.list_slice(ids, 0, max_length)
    try:
        phase = schema.phase_column(text)  # absent or empty: a short clip (phase 1)
    except ValueError as err:
        raise ValueError(f"{text_uri}: {err}") from err
    table = pa.table({"clip_id": text["clip_id"], "caption_index": text["caption_index"],
                      "phase": phase, "input_ids": ids})
    return table.sort_by([("clip_id", "ascending"), ("caption_index", "ascending")])


def _captions_of(text: pa.Table, clip_ids: pa.Array, text_uri: str) -> tuple[pa.Array, pa.ListArray, np.ndarray]:
    """(clip ids with captions, their captions' tokens list<list<int32>>, their phase) for ``clip_ids``."""
    sub = text.filter(pc.is_in(text["clip_id"], value_set=clip_ids))
    n = sub.num_rows
    cid = sub["clip_id"].combine_chunks()
    tokens = sub["input_ids"].combine_chunks()
    if n == 0:
        return cid, pa.ListArray.from_arrays(pa.array([0], pa.int32()), tokens), np.zeros(0, np.int8)
    # Sorted by clip: each clip's captions are one run of rows.
    change = pc.not_equal(cid.slice(1), cid.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1])
    phase = sub["phase"].to_numpy()
    lo, hi = np.minimum.reduceat(phase, starts), np.maximum.reduceat(phase, starts)
    if (lo != hi).any():
        bad = cid[int(starts[np.flatnonzero(lo != hi)[0]])].as_py()
        raise ValueError(f"{text_uri}: the captions of clip {bad!r} disagree on 'phase'")
    offsets = pa.array(np.append(starts, n).astype(np.int32))
    return cid.take(pa.array(starts)), pa.ListArray.from_arrays(offsets, tokens), lo


def _first_occurrence(ids: pa.Array) -> np.ndarray:
    """True for the first row of each clip id within one file."""
    codes = pc.index_in(ids, value_set=pc.unique(ids)).to_numpy(zero_copy_only=False)
    first = np.zeros(len(ids), bool)
    first[np.unique(codes, return_index=True)[1]] = True
    return first


def _cache_schema(target_type: pa.DataType, key: dict) -> pa.Schema:
    return pa.schema(
        [("clip_id", pa.string()), ("split", pa.string()), ("phase", pa.int8()),
         ("tokens", pa.list_(pa.list_(pa.int32()))), ("target", target_type)],
        metadata={KEY_METADATA: json.dumps(key, sort_keys=True).encode()},
    )


def _file_key(path: str) -> dict | None:
    """The key stored in a cache file's schema, or None for a missing or damaged file."""
    try:
        with pa.OSFile(path, "rb") as fh:
            meta = pa.ipc.open_file(fh).schema.metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    raw = meta.get(KEY_METADATA)
    return json.loads(raw) if raw else None


class _Seen:
    """Clip ids of the earlier target files (read lazily: only a rebuild needs them)."""

    def __init__(self, files: list[str]):
        self.files = files
        self.parts: list[pa.Array] = []

    def add(self, k: int, ids: pa.Array) -> None:
        """Keep file k's ids, read anyway to build its entry."""
        if len(self.parts) == k:
            self.parts.append(ids)

    def before(self, k: int) -> pa.Array | None:
        """Every clip id of files[:k]."""
        while len(self.parts) < k:
            uri = self.files[len(self.parts)]
            self.parts.append(storage.read_parquet(uri, columns=["clip_id"])["clip_id"].combine_chunks())
        return pa.concat_arrays(self.parts[:k]) if k else None


class _Builder:
    """Writes one cache entry per target file; the text table is read once, when first needed."""

    def __init__(self, text_uri: str, splits: tuple[str, ...], max_length: int | None, block_rows: int):
        self.text_uri, self.splits, self.max_length, self.block_rows = text_uri, splits, max_length, block_rows
        self._text: pa.Table | None = None

    @property
    def text(self) -> pa.Table:
        if self._text is None:
            self._text = _read_text(self.text_uri, self.splits, self.max_length)
        return self._text

    def build(self, uri: str, target_type: pa.DataType, key: dict, prior: pa.Array | None,
              path: str) -> tuple[CacheEntry, pa.Array]:
        """Join ``uri`` with its captions and write its cache file at ``path`` (atomically)."""
        tgt = storage.read_parquet(uri, columns=["clip_id", "split", "target"])
        ids = tgt["clip_id"].combine_chunks()
        split_code = pc.index_in(tgt["split"], value_set=pa.array(self.splits, pa.string()))
        split_code = split_code.fill_null(-1).to_numpy(zero_copy_only=False)
        unique = _first_occurrence(ids)
        if prior is not None:
            unique &= ~pc.is_in(ids, value_set=prior).to_numpy(zero_copy_only=False)
        candidate = (split_code >= 0) & unique
        cap_ids, cap_tokens, cap_phase = _captions_of(self.text, ids.filter(pa.array(candidate)), self.text_uri)
        pos = pc.index_in(ids, value_set=cap_ids).fill_null(-1).to_numpy(zero_copy_only=False)
        keep = candidate & (pos >= 0)
        rows = np.flatnonzero(keep)
        # Rows of one split (and phase) together, so blocks are mostly of one split.
        rows = rows[np.lexsort((rows, cap_phase[pos[rows]], split_code[rows]))]
        entry = CacheEntry(path=path, source=uri, key=key, blocks=[],
                           dropped_duplicates=int((~unique).sum()),
                           missing_captions=int(((split_code >= 0) & unique & (pos < 0)).sum()))
        schema = _cache_schema(target_type, key)
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                for start in range(0, len(rows), self.block_rows):
                    writer.write_batch(self._block(tgt, ids, rows[start : start + self.block_rows], pos,
                                                   cap_tokens, cap_phase, schema, entry))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        if entry.dropped_duplicates:
            log.warning("%s: dropped %d rows whose clip_id came earlier (first occurrence kept)",
                        uri, entry.dropped_duplicates)
        if entry.missing_captions:
            log.info("%s: %d clips without captions skipped", uri, entry.missing_captions)
        return entry, ids

    def _block(self, tgt: pa.Table, ids: pa.Array, rows: np.ndarray, pos: np.ndarray, cap_tokens: pa.ListArray,
               cap_phase: np.ndarray, schema: pa.Schema, entry: CacheEntry) -> pa.RecordBatch:
        take = pa.array(rows)
        split = tgt["split"].take(take).combine_chunks().cast(pa.string())
        phase = cap_phase[pos[rows]]
        tokens = cap_tokens.take(pa.array(pos[rows]))
        counts: dict[str, dict[int, int]] = {}
        for s, p in zip(split.to_pylist(), phase.tolist()):
            counts.setdefault(s, {}).setdefault(int(p), 0)
            counts[s][int(p)] += 1
        entry.blocks.append(counts)
        lengths = pc.list_value_length(tokens.flatten()).to_numpy(zero_copy_only=False)
        entry.captions += len(lengths)
        entry.token_ints += int(lengths.sum())
        entry.max_tokens = max(entry.max_tokens, int(lengths.max(initial=0)))
        return pa.RecordBatch.from_arrays(
            [ids.take(take), split, pa.array(phase, pa.int8()), tokens,
             tgt["target"].take(take).combine_chunks()],
            schema=schema,
        )


@contextlib.contextmanager
def _locked(cache_dir: str) -> Iterator[None]:
    """Exclusive lock on cache_dir/.lock: the ranks of a node build the cache one at a time."""
    with open(os.path.join(cache_dir, LOCK_FILE), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_index_doc(cache_dir: str) -> dict:
    """The current index.json, or {} when there is none (or one of another cache version)."""
    try:
        with open(os.path.join(cache_dir, INDEX_FILE)) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) and doc.get("version") == CACHE_VERSION else {}


def _write_index(index: CacheIndex) -> None:
    path = os.path.join(index.cache_dir, INDEX_FILE)
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as fh:
        json.dump(index.to_json(), fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def build_cache(
    text_dir: str,
    targets_dir: str,
    cache_dir: str,
    max_length: int | None,
    splits: Iterable[str] = ("train", "valid"),
    block_rows: int = BLOCK_ROWS,
) -> CacheIndex:
    """Join text.parquet with each target file into cache_dir, one Arrow file each; reuse what is current."""
    splits = tuple(splits)
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    dim, files = _target_inputs(targets_dir)
    text_uri = storage.join(text_dir, layout.TEXT)
    if not storage.exists(text_uri):
        raise FileNotFoundError(f"text dir {text_dir} has no {layout.TEXT}")
    cache_dir = storage.local_path(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    types = [_target_type(uri, dim) for uri in files]
    dtypes = {str(t.value_type) for t in types}
    if len(dtypes) > 1:
        raise ValueError(f"{targets_dir}: target files mix value types {sorted(dtypes)}; "
                         f"{files[0]} holds {types[0].value_type}")
    dtype = "float16" if types[0].value_type == pa.float16() else "float32"
    common = {"version": CACHE_VERSION, "text": _file_signature(text_uri), "max_length": max_length,
              "block_rows": block_rows, "splits": list(splits)}

    with _locked(cache_dir):
        for name in os.listdir(cache_dir):  # left by a builder that was killed (none runs now: we hold the lock)
            if ".tmp-" in name:
                os.remove(os.path.join(cache_dir, name))
        doc = _read_index_doc(cache_dir)
        old = {os.path.basename(e.path): e for e in CacheIndex.from_json(cache_dir, doc).entries} if doc else {}
        builder, seen = _Builder(text_uri, splits, max_length, block_rows), _Seen(files)
        entries, built, earlier = [], 0, []
        for k, (uri, typ) in enumerate(zip(files, types)):
            sig = _file_signature(uri)
            # A clip kept here depends on the files before it (first occurrence wins): they are in the key.
            key = {**common, "source": uri, "file": sig, "earlier": _digest(earlier)}
            earlier.append([uri, sig])
            path = os.path.join(cache_dir, _entry_name(uri))
            reuse = old.get(os.path.basename(path))
            if reuse is not None and reuse.key == key and _file_key(path) == key:
                entries.append(reuse)
                continue
            entry, ids = builder.build(uri, typ, key, seen.before(k), path)
            seen.add(k, ids)
            entries.append(entry)
            built += 1
        index = CacheIndex(cache_dir, dim, dtype, block_rows, max_length, splits, entries)
        _write_index(index)
        for stale in set(old) - {os.path.basename(e.path) for e in entries}:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(cache_dir, stale))
    counts = {s: index.rows(s) for s in splits}
    dropped = sum(e.dropped_duplicates for e in entries)
    log.info("pair cache %s: %d entries (%d built, %d reused), rows %s%s", cache_dir, len(entries), built,
             len(entries) - built, counts, f", {dropped} duplicated clip rows dropped" if dropped else "")
    if not any(counts.values()):
        raise ValueError(f"no clip of splits {list(splits)} has both a target in {targets_dir} and captions in "
                         f"{text_uri}")
    for s, n in counts.items():
        if not n:
            log.warning("pair cache %s: no %s rows", cache_dir, s)
    return index


# -- reading blocks -----------------------------------------------------------------------------
class _BlockReader:
    """Record batches of cache files through regular reads (no memory map: touched pages would
    stay in RSS); one open file per entry until closed."""

    def __init__(self, index: CacheIndex):
        self.index = index
        self.files: dict[int, tuple[pa.NativeFile, pa.ipc.RecordBatchFileReader]] = {}

    def read(self, entry: int, block: int) -> pa.RecordBatch:
        """Block ``block`` of entry ``entry``."""
        if entry not in self.files:
            fh = pa.OSFile(self.index.entries[entry].path, "rb")
            self.files[entry] = (fh, pa.ipc.open_file(fh))
        return self.files[entry][1].get_batch(block)

    def close(self) -> None:
        """Close every open file."""
        for fh, _ in self.files.values():
            fh.close()
        self.files.clear()

    def __enter__(self) -> _BlockReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _row_mask(batch: pa.RecordBatch, split: str, phases: frozenset[int] | None) -> np.ndarray:
    """Rows of a cached block that belong to ``split`` (and ``phases``)."""
    mask = pc.equal(batch.column("split"), split)
    if phases is not None:
        mask = pc.and_(mask, pc.is_in(batch.column("phase"), value_set=pa.array(sorted(phases), pa.int8())))
    return mask.to_numpy(zero_copy_only=False)


def _target_matrix(batch: pa.RecordBatch) -> np.ndarray:
    """[rows, dim] view of a block's targets in their stored dtype (no copy)."""
    col = batch.column("target")
    return col.flatten().to_numpy().reshape(len(col), col.type.list_size)


_MASK64 = (1 << 64) - 1


def _splitmix64_int(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)  # uint64 arrays wrap around, as the hash wants
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def caption_picks(clip_ids: list[str], n_captions: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Which caption each clip shows in ``epoch``: a function of (seed, epoch, clip_id) alone."""
    crc = np.fromiter((zlib.crc32(c.encode()) for c in clip_ids), np.uint64, count=len(clip_ids))
    salt = _splitmix64_int(_splitmix64_int(seed & _MASK64) ^ (epoch & _MASK64))
    return (_splitmix64(crc ^ np.uint64(salt)) % np.asarray(n_captions, np.uint64)).astype(np.int64)


def _gather(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of flat[starts[i] : starts[i] + lengths[i]] (a copy)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, flat.dtype)
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return flat[np.arange(total) + shift]


def _chosen_tokens(tokens: pa.ListArray, rows: np.ndarray, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat int32 tokens, lengths) of caption picks[i] of block row rows[i]."""
    outer = tokens.offsets.to_numpy()  # into tokens.values (the captions), slicing included
    captions = tokens.values
    inner = captions.offsets.to_numpy()  # into captions.values (the token ids)
    caption = outer[rows] + picks
    starts = inner[caption].astype(np.int64)
    lengths = inner[caption + 1].astype(np.int64) - starts
    return _gather(captions.values.to_numpy(), starts, lengths), lengths


def _unpooled_empty(shape: tuple[int, int], dtype) -> np.ndarray:
    """np.empty in its own anonymous mapping, so freeing it gives the pages back to the OS at once
    (glibc keeps freed chunks below its adaptive mmap threshold, up to 32 MiB, in its arenas)."""
    count = int(np.prod(shape))
    buf = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1))
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


@dataclass
class _Window:
    """Rows of a few blocks in memory: targets as stored, the epoch's caption of each row."""

    targets: np.ndarray  # [n, dim] stored dtype
    clip_ids: list[str]
    tokens: np.ndarray  # int32, the chosen captions one after another
    offsets: np.ndarray  # [n + 1] int64 into tokens


class _PartialBatch:
    """A batch being filled from one or two windows; targets converted to float32 as they come."""

    def __init__(self, size: int, dim: int):
        self.size = size
        self.target = torch.empty((size, dim), dtype=torch.float32)
        self.n = 0
        self.clip_ids: list[str] = []
        self.tokens: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []

    def add(self, win: _Window, idx: np.ndarray) -> None:
        """Append window rows ``idx`` (copied: the window may go before the batch is full)."""
        m = len(idx)
        rows = np.take(win.targets, idx, axis=0, mode="clip")  # stored dtype; mode="clip": no extra buffer
        # torch's half->float cast is vectorised (numpy's measured ~5x slower at 76,800-D)
        self.target[self.n : self.n + m].copy_(torch.from_numpy(rows))
        starts = win.offsets[idx]
        lengths = win.offsets[idx + 1] - starts
        self.tokens.append(_gather(win.tokens, starts, lengths))
        self.lengths.append(lengths)
        self.clip_ids += [win.clip_ids[i] for i in idx]
        self.n += m

    def tensors(self, pad_id: int) -> dict:
        """The batch dict: input_ids/attention_mask [B, L] long (right-padded), target [B, dim] float32."""
        batch = pad_flat(np.concatenate(self.tokens), np.concatenate(self.lengths), pad_id)
        return batch | {"target": self.target, "clip_ids": self.clip_ids}


def pad_flat(flat: np.ndarray, lengths: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Concatenated token ids and their per-row lengths -> right-padded input_ids/attention_mask [B, L] long."""
    flat = flat.astype(np.int64)
    width = max(int(lengths.max(initial=0)), 1)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids = np.full((len(lengths), width), pad_id, np.int64)
    mask = np.zeros((len(lengths), width), np.int64)
    ids[rows, cols] = flat
    mask[rows, cols] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def pad_token_lists(token_lists: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """pad_flat for a list of token-id lists (validation queries)."""
    lengths = np.array([len(t) for t in token_lists], np.int64)
    flat = np.fromiter((i for t in token_lists for i in t), np.int64, count=int(lengths.sum()))
    return pad_flat(flat, lengths, pad_id)


# -- the training stream ------------------------------------------------------------------------
def _assign(units: list[Unit], world: int, seed: int) -> list[list[Unit]]:
    """Each rank's blocks: a seeded order (the same every epoch), each block to the rank with
    the fewest rows so far, so ranks get about the same number of rows."""
    order = np.random.default_rng((seed, _ASSIGN)).permutation(len(units))
    owned: list[list[Unit]] = [[] for _ in range(world)]
    load = [(0, r) for r in range(world)]  # a heap of (rows, rank)
    for i in order:
        rows, r = heapq.heappop(load)
        owned[r].append(units[i])
        heapq.heappush(load, (rows + units[i].rows, r))
    return owned


def memory_plan(index: CacheIndex, batch_size: int, budget_gib: float, max_unit_rows: int,
                windows_in_memory: int = 2, window_rows: int | None = None) -> dict:
    """How many rows a window may hold within ``budget_gib`` (or check a pinned ``window_rows``
    against it); raises when not even one block fits."""
    tok = index.token_stats()
    stored = index.dim * index.itemsize
    row_bytes = stored + math.ceil(4 * tok["per_caption"]) + ROW_OVERHEAD
    block_bytes = index.block_rows * (stored + math.ceil(4 * tok["per_clip"]) + ROW_OVERHEAD)
    # the batch being built and the one the caller still holds (float32 targets, int64 ids and mask),
    # the stored-dtype rows copied into it, the Arrow block being read and the runtime's share
    batch_bytes = batch_size * (index.dim * 4 + 16 * max(tok["max"], 1))
    reserve = 2 * batch_bytes + batch_size * stored + block_bytes + RUNTIME_RESERVE
    budget = int(budget_gib * GIB)
    min_budget = reserve + windows_in_memory * max_unit_rows * row_bytes
    if budget < min_budget:
        raise ValueError(
            f"memory budget {budget_gib} GiB ({budget} bytes) cannot hold a batch of {batch_size} rows of "
            f"{row_bytes} bytes ({index.dim}-D {index.dtype} + tokens) next to {windows_in_memory} window(s) of "
            f"one block ({max_unit_rows} rows): at least {min_budget / GIB:.4f} GiB ({min_budget} bytes) needed"
        )
    fits = (budget - reserve) // (windows_in_memory * row_bytes)
    if window_rows is not None and not max_unit_rows <= window_rows <= fits:
        need = reserve + windows_in_memory * window_rows * row_bytes
        raise ValueError(f"window_rows {window_rows} must be >= {max_unit_rows} (one block) and fit the memory "
                         f"budget {budget_gib} GiB (which holds {fits}); it needs {need / GIB:.4f} GiB")
    return {"budget_bytes": budget, "row_bytes": row_bytes, "window_rows": int(window_rows or fits),
            "windows_in_memory": windows_in_memory, "batch_bytes": batch_bytes, "block_bytes": block_bytes,
            "min_budget_bytes": min_budget}


class PairStream:
    """One rank's training batches: its own blocks, shuffled per epoch in memory-bounded windows."""

    def __init__(self, index: CacheIndex, split: str, batch_size: int, rank: int, world: int, seed: int,
                 memory_budget_gib: float, phases: set[int] | None = None, pad_id: int = 0,
                 prefetch: bool = True, window_rows: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} of world {world}: need world >= 1 and 0 <= rank < world")
        self.index, self.split, self.batch_size = index, split, batch_size
        self.rank, self.world, self.seed, self.pad_id = rank, world, seed, pad_id
        self.phases = _phase_set(phases)
        self.prefetch = prefetch
        units = split_units(index.units(split, self.phases), world)
        which = f"{split} rows" + (f" of phases {sorted(self.phases)}" if self.phases is not None else "")
        if not units:
            raise ValueError(f"no {which} in the cache at {index.cache_dir}")
        # The windows (and so the batch order) follow the budget: a run resumed under another budget
        # pins the window size it started with (memory_plan()["window_rows"]) to see the same batches.
        self._plan = memory_plan(index, batch_size, memory_budget_gib, max(u.rows for u in units),
                                 2 if prefetch else 1, window_rows)
        owned = _assign(units, world, seed)
        self.rank_rows = [sum(u.rows for u in mine) for mine in owned]
        self.steps_per_epoch = min(self.rank_rows) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{index.rows(split, self.phases)} {which} over {world} rank(s) give "
                             f"{min(self.rank_rows)} rows to the smallest rank (rows per rank {self.rank_rows}), "
                             f"fewer than one batch of {batch_size}")
        self.units = owned[rank]
        self.blocks_read = 0  # record batches read so far (tests check a resume reads only its windows)

    def memory_plan(self) -> dict:
        """Window size and the byte counts behind it, for logging."""
        return dict(self._plan)

    @property
    def window_rows(self) -> int:
        """The most rows one window holds."""
        return self._plan["window_rows"]

    def windows(self, epoch: int) -> list[list[Unit]]:
        """This rank's blocks for ``epoch``: shuffled, then grouped into windows of <= window_rows rows."""
        order = np.random.default_rng((self.seed, epoch, self.rank, _BLOCK_ORDER)).permutation(len(self.units))
        windows: list[list[Unit]] = []
        rows = 0
        for i in order:
            unit = self.units[i]
            if not windows or rows + unit.rows > self.window_rows:
                windows.append([])
                rows = 0
            windows[-1].append(unit)
            rows += unit.rows
        return windows

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
        """The epoch's batches from ``start_step`` on, reading only the windows they come from."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside 0..{self.steps_per_epoch} (steps per epoch)")
        return self._batches(epoch, start_step)

    def _batches(self, epoch: int, start_step: int) -> Iterator[dict]:
        if start_step == self.steps_per_epoch:
            return
        windows = self.windows(epoch)
        bounds = np.cumsum([0] + [sum(u.rows for u in w) for w in windows])
        first, end = start_step * self.batch_size, self.steps_per_epoch * self.batch_size
        w0 = int(np.searchsorted(bounds, first, side="right")) - 1
        w_last = int(np.searchsorted(bounds, end - 1, side="right")) - 1
        part = _PartialBatch(self.batch_size, self.index.dim)
        with contextlib.closing(self._load_ahead(epoch, windows, w0, w_last)) as loaded:
            for w, win in loaded:
                rng = np.random.default_rng((self.seed, epoch, self.rank, _ROW_ORDER, w))
                order = rng.permutation(len(win.clip_ids))
                at = first - int(bounds[w]) if w == w0 else 0
                stop = min(len(order), end - int(bounds[w]))
                while at < stop:
                    take = min(self.batch_size - part.n, stop - at)
                    part.add(win, order[at : at + take])
                    at += take
                    if part.n == self.batch_size:
                        yield part.tensors(self.pad_id)
                        part = _PartialBatch(self.batch_size, self.index.dim)
                win = order = None  # free the window before the next one is read

    def _load_ahead(self, epoch: int, windows: list[list[Unit]], w0: int, w_last: int) -> Iterator[tuple[int, _Window]]:
        """(w, window) for w0..w_last; with prefetch, window w+1 is read while w is consumed."""
        stop = threading.Event()
        if not self.prefetch:
            for w in range(w0, w_last + 1):
                yield w, self._load_window(epoch, windows[w], stop)
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pair-stream")
        try:
            pending = pool.submit(self._load_window, epoch, windows[w0], stop)
            for w in range(w0, w_last + 1):
                win, pending = pending.result(), None
                if w < w_last:
                    pending = pool.submit(self._load_window, epoch, windows[w + 1], stop)
                yield w, win
                win = None
        finally:
            stop.set()  # an early close: the loader stops at its next block
            pool.shutdown(wait=True, cancel_futures=True)

    def _load_window(self, epoch: int, units: list[Unit], stop: threading.Event) -> _Window | None:
        """Read the rows of ``units`` (this split/phases) into one window."""
        n = sum(u.rows for u in units)
        targets = _unpooled_empty((n, self.index.dim), np.float16 if self.index.dtype == "float16" else np.float32)
        clip_ids: list[str] = []
        tokens: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        at = 0
        with _BlockReader(self.index) as reader:
            for unit in units:
                if stop.is_set():
                    return None
                batch = reader.read(unit.entry, unit.block)
                self.blocks_read += 1
                rows = unit.select(np.flatnonzero(_row_mask(batch, self.split, self.phases)))
                if len(rows) != unit.rows:
                    raise RuntimeError(f"{self.index.entries[unit.entry].path} block {unit.block}: {len(rows)} "
                                       f"{self.split} rows, index.json says {unit.rows}; rebuild the cache")
                np.take(_target_matrix(batch), rows, axis=0, out=targets[at : at + len(rows)], mode="clip")
                ids = batch.column("clip_id").take(pa.array(rows)).to_pylist()
                col = batch.column("tokens")
                n_captions = pc.list_value_length(col).to_numpy(zero_copy_only=False)[rows]
                flat, lens = _chosen_tokens(col, rows, caption_picks(ids, n_captions, self.seed, epoch))
                clip_ids += ids
                tokens.append(flat)
                lengths.append(lens)
                at += len(rows)
                batch = col = None  # the block's buffers go now, not at the next read
        lens = np.concatenate(lengths)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return _Window(targets, clip_ids, np.concatenate(tokens), offsets)


# -- reading rows outside training ----------------------------------------------------------------
def iter_rows(index: CacheIndex, split: str, rank: int = 0, world: int = 1, block_rows: int | None = None,
              phases: set[int] | None = None) -> Iterator[tuple[list[str], list[list[list[int]]], np.ndarray]]:
    """(clip_ids, every caption's tokens per clip, targets as stored) chunks of this rank's blocks of ``split``."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world {world}: need world >= 1 and 0 <= rank < world")
    phases = _phase_set(phases)
    units = index.units(split, phases)
    if not units:
        log.warning("no %s rows in the cache at %s", split, index.cache_dir)
    chunks = _block_rows(index, split_units(units, world)[rank::world], split, phases)
    return chunks if block_rows is None else _rechunk(chunks, block_rows)


def _block_rows(index: CacheIndex, units: list[Unit], split: str, phases: frozenset[int] | None) -> Iterator[tuple]:
    with _BlockReader(index) as reader:
        for unit in units:
            batch = reader.read(unit.entry, unit.block)
            rows = pa.array(unit.select(np.flatnonzero(_row_mask(batch, split, phases))))
            targets = np.take(_target_matrix(batch), rows.to_numpy(), axis=0)  # a copy: the block can go
            yield (batch.column("clip_id").take(rows).to_pylist(), batch.column("tokens").take(rows).to_pylist(),
                   targets)


def _rechunk(chunks: Iterator[tuple], size: int) -> Iterator[tuple]:
    """The same rows in chunks of ``size`` (the last one shorter)."""
    if size < 1:
        raise ValueError(f"block_rows must be >= 1, got {size}")
    ids: list[str] = []
    toks: list = []
    parts: list[np.ndarray] = []
    held = 0
    for chunk_ids, chunk_toks, chunk_targets in chunks:
        ids += chunk_ids
        toks += chunk_toks
        parts.append(chunk_targets)
        held += len(chunk_ids)
        while held >= size:
            targets = np.concatenate(parts)
            yield ids[:size], toks[:size], targets[:size]
            ids, toks, parts, held = ids[size:], toks[size:], [targets[size:]], held - size
    if held:
        yield ids, toks, np.concatenate(parts)


def sample_targets(index: CacheIndex, split: str, n: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of min(n, rows) targets of ``split`` as float32, reading only the blocks it hits."""
    units = index.units(split)
    total = sum(u.rows for u in units)
    if total == 0:
        raise ValueError(f"no {split} rows in the cache at {index.cache_dir} to sample targets from")
    k = min(int(n), total)
    picks = np.sort(np.random.default_rng((seed, _SAMPLE)).choice(total, size=k, replace=False))
    out = np.empty((k, index.dim), np.float32)
    bounds = np.cumsum([0] + [u.rows for u in units])
    at = 0
    with _BlockReader(index) as reader:
        for i in np.unique(np.searchsorted(bounds, picks, side="right") - 1):
            local = picks[(picks >= bounds[i]) & (picks < bounds[i + 1])] - bounds[i]
            batch = reader.read(units[i].entry, units[i].block)
            rows = np.flatnonzero(_row_mask(batch, split, None))[local]
            out[at : at + len(rows)] = _target_matrix(batch)[rows]
            at += len(rows)
    return out
