"""Training stream memory and throughput on a target set larger than the memory budget.

    python -m tests.bench.bench_train_stream [--budget-gib 1] [--ratio 2.2] [--clips N] [--dim 76800]
                                             [--dtype float16] [--batch 256] [--files 8] [--tmp /tmp]

Writes a synthetic target set (``--files`` Parquet files in the real target schema, ``--clips``
clips; by default as many as make it ``--ratio`` times the budget) and a text.parquet of 1-3
tokenised captions per clip, builds the pair cache, then streams one full epoch with
PairStream(batch, budget) in a fresh process and prints one line:

    train-stream: <N> clips x <dim> <dtype>, budget <B> GiB, peak RSS <R> GiB, <S> samples/s

R is the streaming process's ru_maxrss (imports included); S is samples yielded per second over
the epoch. Details in build/bench/train_stream.json. Everything is written to a temporary dir
under --tmp, removed at the end (at the default size: ~2.4 GB of targets and as much cache).

This process only orchestrates and stays small: Linux reports a child's ru_maxrss as at least
its parent's peak at exec, so the data is made and streamed in two child processes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from tests.bench.roles import run_role

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3
ROWS_PER_WRITE = 256  # rows generated and written at a time (bounds the maker's memory)


def make_data(work: Path, clips: int, dim: int, dtype: str, files: int, max_length: int) -> dict:
    """Target files + shards.json + meta.json, text.parquet, then the cache; returns timings."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from musictext import layout, schema, storage
    from musictext.train.stream import build_cache

    rng = np.random.default_rng(0)
    targets_dir, text_dir = work / "targets", work / "text"
    targets_dir.mkdir(parents=True)
    text_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    uris, ids_all = [], []
    per_file = math.ceil(clips / files)
    sch = schema.target_schema(dim, dtype)
    for f in range(files):
        ids = [f"bench{f:03d}-{i:06d}#0" for i in range(min(per_file, clips - f * per_file))]
        if not ids:
            break
        uri = targets_dir / f"part-{f:03d}.parquet"
        with pq.ParquetWriter(uri, sch, use_dictionary=["clip_id", "split"], compression="none",
                              write_statistics=False) as writer:
            for start in range(0, len(ids), ROWS_PER_WRITE):
                chunk = ids[start : start + ROWS_PER_WRITE]
                writer.write_table(pa.table([pa.array(chunk), pa.array(["train"] * len(chunk)),
                                             target_column(rng, len(chunk), dim, dtype)], schema=sch))
        uris.append(str(uri))
        ids_all += ids
    storage.write_json(str(targets_dir / layout.TARGET_SHARDS), {"files": uris})
    storage.write_json(str(targets_dir / layout.META), {"target_dim": dim})
    n_caps = rng.integers(1, 4, size=len(ids_all))
    cap_ids = np.repeat(np.arange(len(ids_all)), n_caps)
    lengths = rng.integers(8, 48, size=len(cap_ids))
    tokens = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)),
                                      pa.array(rng.integers(1000, 30000, size=int(lengths.sum()), dtype=np.int32)))
    text = pa.table({
        "clip_id": pa.array(ids_all).take(pa.array(cap_ids)), "split": ["train"] * len(cap_ids),
        "caption_index": pa.array(np.concatenate([np.arange(k) for k in n_caps]).astype(np.int32)),
        "text": ["a synthetic caption"] * len(cap_ids), "input_ids": tokens,
        "phase": pa.array(np.ones(len(cap_ids), np.int8)),
    }, schema=schema.TEXT_SCHEMA)
    pq.write_table(text, text_dir / layout.TEXT)
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = build_cache(str(text_dir), str(targets_dir), str(work / "cache"), max_length, splits=("train",))
    return {"write_s": round(written, 1), "build_s": round(time.perf_counter() - t0, 1), "rows": index.rows("train"),
            "target_bytes": len(ids_all) * dim * index.itemsize,
            "cache_bytes": sum(os.path.getsize(e.path) for e in index.entries)}


def target_column(rng, rows: int, dim: int, dtype: str):
    """Random finite targets: random bits with the top exponent bit cleared (|x| < 2)."""
    import numpy as np
    import pyarrow as pa

    if dtype == "float16":
        values = (np.frombuffer(rng.bytes(rows * dim * 2), np.uint16) & 0xBBFF).view(np.float16)
    else:
        values = rng.standard_normal(rows * dim, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values), dim)


def stream_epoch(cache_dir: str, batch: int, budget_gib: float) -> dict:
    """One epoch of PairStream on rank 0 of 1: samples/s and this process's memory."""
    import re
    import resource

    import pyarrow as pa
    import pyarrow.compute as pc

    from musictext.train.stream import PairStream, load_index

    def status(key: str) -> int:
        return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

    pc.equal(pa.array(["a"]), "a")  # Arrow's compute kernels initialise on first use, once per process
    stream = PairStream(load_index(cache_dir), "train", batch, 0, 1, seed=0, memory_budget_gib=budget_gib)
    with open("/proc/self/clear_refs", "w") as fh:  # VmHWM := now, to see the stream's own growth
        fh.write("5")
    base = status("VmRSS")
    t0 = time.perf_counter()
    samples = steps = 0
    for b in stream.batches(0):
        samples += len(b["clip_ids"])
        steps += 1
    seconds = time.perf_counter() - t0
    return {"samples": samples, "steps": steps, "seconds": round(seconds, 2),
            "samples_per_s": round(samples / seconds, 1), "blocks_read": stream.blocks_read,
            "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "rss_after_imports_bytes": base, "stream_growth_bytes": status("VmHWM") - base,
            "plan": stream.memory_plan(), "windows": len(stream.windows(0))}


def child(role: str, payload: dict) -> dict:
    """Run ``role`` in a fresh interpreter; its result."""
    return run_role("tests.bench.bench_train_stream", role, payload)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-gib", "--memory-budget", dest="budget_gib", type=float, default=1.0)
    ap.add_argument("--ratio", type=float, default=2.2, help="dataset size / budget when --clips is not given")
    ap.add_argument("--clips", type=int, default=0)
    ap.add_argument("--dim", type=int, default=76800)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "train_stream.json"))
    ap.add_argument("--role", choices=["make", "stream"], help=argparse.SUPPRESS)
    ap.add_argument("--payload", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role:
        p = json.loads(args.payload)
        result = (make_data(Path(p["work"]), p["clips"], p["dim"], p["dtype"], p["files"], p["max_length"])
                  if args.role == "make" else stream_epoch(p["cache"], p["batch"], p["budget_gib"]))
        print(json.dumps(result))
        return 0

    itemsize = 2 if args.dtype == "float16" else 4
    clips = args.clips or math.ceil(args.ratio * args.budget_gib * GIB / (args.dim * itemsize))
    dataset = clips * args.dim * itemsize
    need = 2 * dataset + GIB  # targets, their cache, and room
    free = shutil.disk_usage(args.tmp).free
    if free < need:
        raise SystemExit(f"{args.tmp} has {free / GIB:.1f} GiB free; the bench needs {need / GIB:.1f} GiB")
    work = Path(tempfile.mkdtemp(prefix="bench-train-stream-", dir=args.tmp))
    try:
        made = child("make", {"work": str(work), "clips": clips, "dim": args.dim, "dtype": args.dtype,
                              "files": args.files, "max_length": args.max_length})
        streamed = child("stream", {"cache": str(work / "cache"), "batch": args.batch, "budget_gib": args.budget_gib})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"clips": clips, "dim": args.dim, "dtype": args.dtype, "budget_gib": args.budget_gib,
              "batch": args.batch, "files": args.files, "dataset_bytes": dataset,
              "dataset_over_budget": round(dataset / (args.budget_gib * GIB), 2), **made, **streamed}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"train-stream: {clips} clips x {args.dim} {args.dtype}, budget {args.budget_gib:g} GiB, "
          f"peak RSS {streamed['ru_maxrss_bytes'] / GIB:.2f} GiB, {streamed['samples_per_s']:.0f} samples/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
