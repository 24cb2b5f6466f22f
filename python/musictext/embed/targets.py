"""The embed_audio step: clip shards -> targets.parquet + meta.json + rejected.jsonl.

Each clip's target is what Navidrome's upload path stores for the clip's file: the family reads
its rendering of the clip (``cfg.audio.clip_rendering``) with ``embedder.load_file``, exactly as
the upload path loads a file. Decoding runs in a thread pool ahead of the model (bounded
prefetch), the model embeds batches of windows across clips, and the targets stream into a
parquet file written under a temporary name and moved into place. meta.json is written last: it
marks the output complete, so a re-run with the same config and inputs skips the work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from musictext import layout, schema, storage
from musictext.audio.embedder import AudioEmbedder, build_embedder
from musictext.config import FamilyConfig, load_family_config, m2l_native_rate_override
from musictext.logs import progress
from musictext.manifest import ClipAudio, read_clip_rows
from musictext.rejects import ItemError, Rejections

log = logging.getLogger(__name__)

STAGE = "embed_audio"
ROW_GROUP = 256
DECODE_NICENESS = 10


@dataclass
class ClipRef:
    clip_id: str
    split: str
    uri: str  # the file to decode: the clip's rendering for this family


def config_fingerprint(cfg: FamilyConfig, clips_dirs: list[str]) -> str:
    """Everything that changes the numbers: the audio config and the input locations."""
    payload = {"audio": cfg.audio.model_dump(mode="json"), "inputs": list(clips_dirs)}
    # Throughput knobs do not change targets beyond float noise, and the MuQ-MuLan checkpoint
    # replaces its towers' weights wherever they were loaded from; keep them out of the key.
    for knob in ("batch_windows", "clips_per_call", "decode_workers", "towers"):
        payload["audio"].pop(knob, None)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def expected_meta(cfg: FamilyConfig, clips_dirs: list[str]) -> dict:
    a = cfg.audio
    return {
        "family": cfg.family,
        "kind": a.kind,
        "target_dim": a.target_dim,
        "window_dim": a.window_dim,
        "sample_rate": a.sample_rate,
        "model": a.model,
        "random_init": a.random_init,
        "storage_dtype": a.storage_dtype,
        # which clip file the targets come from, and whether it is the clip as decoded
        # (Music2Latent's native-rate option) or its 44.1 kHz stereo rendering
        "clip_rendering": a.clip_rendering,
        "m2l_native_rate": bool(getattr(a, "m2l_native_rate", False)),
        "fingerprint": config_fingerprint(cfg, clips_dirs),
    }


def _is_complete(out_dir: str, want: dict) -> dict | None:
    meta_uri = storage.join(out_dir, layout.META)
    targets_uri = storage.join(out_dir, layout.TARGETS)
    if not (storage.exists(meta_uri) and storage.exists(targets_uri)):
        return None
    try:
        meta = storage.read_json(meta_uri)
    except (ValueError, OSError):
        return None
    if any(meta.get(k) != v for k, v in want.items()):
        return None
    fs, path = storage.fs_for(targets_uri)
    try:
        n = pq.ParquetFile(path, filesystem=fs).metadata.num_rows
    except Exception:  # a damaged file is redone, not trusted
        return None
    return meta if n == meta.get("n") else None


def list_clips(clips_dirs: list[str], rendering: str, rejects: Rejections) -> list[ClipRef]:
    """Every clip of every shard, with its ``rendering`` file; a bad row (``manifest.ClipAudio``:
    a mistyped field, an unknown split, an audio path that leaves its shard) is rejected by name."""
    refs: list[ClipRef] = []
    seen: set[str] = set()
    for shard in clips_dirs:
        for row in read_clip_rows(shard, ClipAudio, rejects):
            if row.clip_id in seen:
                rejects.add(row.clip_id, f"duplicate clip_id (again in {shard})")
                continue
            if not row.audio:
                rejects.add(row.clip_id, "no audio file listed")
                continue
            try:
                ref = schema.audio_ref_for([a.model_dump() for a in row.audio], rendering)
            except KeyError as err:
                rejects.add(row.clip_id, f"{err.args[0]}: the clip stage did not write this family's rendering")
                continue
            seen.add(row.clip_id)
            refs.append(ClipRef(row.clip_id, row.split, storage.join(shard, ref["path"])))
    return refs


def _yield_to_model() -> None:
    """Run this decode thread at a lower CPU priority than the model.

    Where decoding and the model share cores (a CPU host), a preempted model thread stalls a
    whole OpenMP region; at a lower priority decoding fills the cores the model leaves idle
    instead. With spare cores (a GPU node) it changes nothing.
    """
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)


def decode_ahead(embedder: AudioEmbedder, refs: list[ClipRef], workers: int, lookahead: int) -> Iterator:
    """(ref, decoded input or ItemError) in input order; decoding runs ``lookahead`` clips ahead."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode",
                            initializer=_yield_to_model) as pool:
        queue: deque[tuple[ClipRef, Future]] = deque()
        it = iter(refs)
        for ref in it:
            queue.append((ref, pool.submit(embedder.load_file, ref.uri, ref.clip_id)))
            if len(queue) >= lookahead:
                break
        while queue:
            ref, fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(embedder.load_file, nxt.uri, nxt.clip_id)))
            try:
                yield ref, fut.result()
            except ItemError as err:
                yield ref, err


def embed_batches(embedder: AudioEmbedder, refs: list[ClipRef], rejects: Rejections, batch_windows: int,
                  decode_workers: int, desc: str, unit: str) -> Iterator[list]:
    """[(ref, vec)] per group of about ``batch_windows`` model windows, decoding ahead of the
    model; undecodable clips are rejected. Each group is yielded as soon as it is embedded, so a
    caller can keep what is done before an interruption."""
    batch_units = max(1, int(batch_windows))
    lookahead = max(2 * batch_units, 4 * max(1, decode_workers))
    group, units = [], 0
    stream = decode_ahead(embedder, refs, decode_workers, lookahead)
    for ref, wave in progress(stream, desc=desc, total=len(refs), unit=unit):
        if isinstance(wave, ItemError):
            rejects.add(ref.clip_id, wave.reason)
            continue
        group.append((ref, wave))
        units += embedder.adapter.n_units(int(wave.shape[-1]))
        if units >= batch_units:
            yield embed_group(embedder, group, rejects)
            group, units = [], 0
    if group:
        yield embed_group(embedder, group, rejects)


def embed_group(embedder: AudioEmbedder, group, rejects: Rejections) -> list:
    """[(ref, wave)] -> [(ref, vec)]. On a model error the group is redone one clip at a time,
    so only the clip that fails is rejected."""
    try:
        vecs = list(embedder.embed_loaded([w for _, w in group]))
    except Exception as err:
        if len(group) == 1:
            rejects.add(group[0][0].clip_id, f"embedding failed: {type(err).__name__}: {err}")
            return []
        return [pair for item in group for pair in embed_group(embedder, [item], rejects)]
    good = []
    for (ref, _), vec in zip(group, vecs):
        if bool(torch.isfinite(vec).all()):
            good.append((ref, vec))
        else:
            rejects.add(ref.clip_id, "non-finite target vector")
    return good


class _TargetWriter:
    """Streams row groups into a temporary parquet file, moved into place on close."""

    def __init__(self, uri: str, dim: int, dtype: str):
        self.schema = schema.target_schema(dim, dtype)
        self.np_dtype = np.float16 if dtype == "float16" else np.float32
        self.value_type = self.schema.field("target").type.value_type
        self.dim = dim
        self._target = storage.atomic_target(uri)
        fs, tmp = self._target.__enter__()
        self.writer = pq.ParquetWriter(tmp, self.schema, filesystem=fs)
        self.ids: list[str] = []
        self.splits: list[str] = []
        self.vecs: list[np.ndarray] = []
        self.n = 0

    def add(self, clip_id: str, split: str, vec: torch.Tensor) -> None:
        self.ids.append(clip_id)
        self.splits.append(split)
        self.vecs.append(vec.numpy().astype(self.np_dtype))
        if len(self.ids) >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if not self.ids:
            return
        flat = pa.array(np.concatenate(self.vecs), type=self.value_type)
        target = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        batch = pa.RecordBatch.from_arrays(
            [pa.array(self.ids, pa.string()), pa.array(self.splits, pa.string()), target],
            schema=self.schema,
        )
        self.writer.write_batch(batch)
        self.n += len(self.ids)
        self.ids, self.splits, self.vecs = [], [], []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self._target.__exit__(None, None, None)  # moves the finished file into place

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self._target.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes it


def embed_clips(
    clips_dirs: list[str],
    out_dir: str,
    cfg: FamilyConfig,
    embedder: AudioEmbedder | None = None,
) -> dict:
    """Embed every clip of ``clips_dirs`` into ``out_dir``; returns the meta dict.

    ``embedder`` may be passed to reuse a loaded model (tests, benchmarks); by default it is
    built from ``cfg.audio``.
    """
    clips_dirs = [str(d) for d in clips_dirs]
    want = expected_meta(cfg, clips_dirs)
    done = _is_complete(out_dir, want)
    if done is not None:
        log.info("%s already holds %d targets for this config; skipping", out_dir, done["n"])
        return {**done, "skipped": True}

    audio = cfg.audio
    rejects = Rejections(STAGE)
    refs = list_clips(clips_dirs, audio.clip_rendering, rejects)
    embedder = embedder or build_embedder(audio)
    if embedder.target_dim != audio.target_dim:
        raise ValueError(f"embedder gives {embedder.target_dim}-D, config wants {audio.target_dim}")

    storage.makedirs(out_dir)
    writer = _TargetWriter(storage.join(out_dir, layout.TARGETS), audio.target_dim, audio.storage_dtype)
    try:
        batches = embed_batches(embedder, refs, rejects, audio.batch_windows, audio.decode_workers,
                                desc=f"embed {cfg.family}", unit="clip")
        for batch in batches:
            for r, vec in batch:
                writer.add(r.clip_id, r.split, vec)
        writer.close()
    except BaseException:
        writer.abort()
        raise

    rejects.write(out_dir)
    meta = {**want, "n": writer.n, "n_rejected": len(rejects), "inputs": clips_dirs}
    storage.write_json(storage.join(out_dir, layout.META), meta)
    log.info("%s: %d targets, %d rejected", out_dir, writer.n, len(rejects))
    return {**meta, "skipped": False}


def embed_shard(clips_dir: str, out_dir: str, families: list[str], profile: str,
                m2l_native_rate: bool = False) -> dict:
    """The per-shard GPU task: targets of one clip shard for each family, in out_dir/<family>/.

    One task per shard keeps each unit of work (and each retry) small and lets a shard's
    embedding start as soon as it is clipped; the families run one after another on one GPU.
    Each family's output is idempotent (see embed_clips), so a retried task redoes only what
    was not finished. ``m2l_native_rate`` sets that field of every family config that has it
    (Music2Latent then reads the clip as decoded, not its 44.1 kHz stereo rendering).
    """
    summary: dict[str, int] = {}
    for family in families:
        cfg = load_family_config(family, profile, m2l_native_rate_override(family, m2l_native_rate))
        meta = embed_clips([clips_dir], storage.join(out_dir, family), cfg)
        summary[f"{family}_targets"] = int(meta["n"])
        summary[f"{family}_rejected"] = int(meta["n_rejected"])
    return summary
