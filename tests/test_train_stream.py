"""The training stream: the Arrow pair cache (train.stream.build_cache) and PairStream on top of it.

Synthetic text.parquet and target files in the real schemas: float16 targets, several target
files (a gathered shards.json), 1-3 captions per clip, one clip without captions and one clip id
in two target files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from musictext import layout, schema, storage
from musictext.train import stream as st
from musictext.train.stream import GIB, PairStream, build_cache, iter_rows, load_index, sample_targets

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 6


def write_targets(path: Path, ids: list[str], splits: list[str], targets: np.ndarray) -> None:
    dim = targets.shape[1]
    value = pa.float16() if targets.dtype == np.float16 else pa.float32()
    col = pa.FixedSizeListArray.from_arrays(pa.array(targets.reshape(-1)), dim)  # zero-copy, dtype kept
    table = pa.table([pa.array(ids), pa.array(splits), col],
                     schema=schema.target_schema(dim, "float16" if value == pa.float16() else "float32"))
    pq.write_table(table, path, use_dictionary=["clip_id", "split"])  # a float dictionary only slows it


def make_dataset(root: Path, files: tuple[int, ...] = (30, 25, 20), dim: int = 12, seed: int = 0,
                 phases: bool = False, valid_every: int = 5, max_captions: int = 3,
                 token_range: tuple[int, int] = (1, 10)) -> dict:
    """Target files + shards.json + meta.json and text.parquet; returns what the join must give:
    {clip_id: {split, phase, tokens (truncated, caption order), target (float16)}}."""
    rng = np.random.default_rng(seed)
    targets_dir, text_dir = root / "targets", root / "text"
    targets_dir.mkdir(parents=True)
    text_dir.mkdir(parents=True)
    expected: dict[str, dict] = {}
    uris, text_rows, k = [], [], 0
    for f, n in enumerate(files):
        ids = [f"c{k + i:05d}" for i in range(n)]
        k += n
        if f == 1:
            ids[3] = "c00002"  # also in file 0: the first occurrence (file 0) wins
        splits = ["valid" if (k + i) % valid_every == 0 else "train" for i in range(n)]
        targets = rng.standard_normal((n, dim)).astype(np.float16)
        uri = targets_dir / f"part-{f}.parquet"
        write_targets(uri, ids, splits, targets)
        uris.append(str(uri))
        for i, cid in enumerate(ids):
            if cid in expected:
                continue
            expected[cid] = {"split": splits[i], "target": targets[i], "phase": 2 if phases and i % 3 == 0 else 1}
    no_caption = "c00001"
    for cid, row in expected.items():
        if cid == no_caption:
            continue
        n_caps = int(rng.integers(1, max_captions + 1))
        caps = [rng.integers(5, 1000, size=int(rng.integers(*token_range))).tolist() for _ in range(n_caps)]
        row["tokens"] = [c[:MAX_LENGTH] for c in caps]
        for c in rng.permutation(n_caps):  # stored out of caption order on purpose
            text_rows.append({"clip_id": cid, "split": row["split"], "caption_index": int(c),
                              "text": f"caption {c} of {cid}", "input_ids": caps[c], "phase": row["phase"]})
    del expected[no_caption]
    text = pa.Table.from_pylist(text_rows, schema=schema.TEXT_SCHEMA)
    if not phases:  # written before the phase column existed: every clip is phase 1
        text = text.drop_columns(["phase"])
    pq.write_table(text, text_dir / layout.TEXT)
    storage.write_json(str(targets_dir / layout.TARGET_SHARDS), {"files": uris})
    storage.write_json(str(targets_dir / layout.META), {"target_dim": dim})
    return {"text": str(text_dir), "targets": str(targets_dir), "cache": str(root / "cache"),
            "expected": expected, "files": uris, "no_caption": no_caption, "dim": dim}


def read_cache(index) -> list[dict]:
    rows = []
    for entry in index.entries:
        with pa.OSFile(entry.path, "rb") as fh:
            reader = pa.ipc.open_file(fh)
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                assert batch.num_rows <= index.block_rows
                for r in batch.to_pylist():
                    rows.append({**r, "block": (entry.path, b)})
    return rows


def train_ids(data: dict) -> set[str]:
    return {c for c, r in data["expected"].items() if r["split"] == "train"}


def budget_for(index, batch: int, window: int) -> float:
    """The budget (GiB) whose two windows hold ``window`` rows each."""
    plan = st.memory_plan(index, batch, 1.0, 1)
    reserve = plan["min_budget_bytes"] - 2 * plan["row_bytes"]
    return (reserve + (2 * window + 1) * plan["row_bytes"]) / GIB


def epoch(stream: PairStream, e: int, start: int = 0) -> list[dict]:
    return list(stream.batches(e, start))


def ids_of(batches: list[dict]) -> list[str]:
    return [c for b in batches for c in b["clip_ids"]]


# -- the cache ----------------------------------------------------------------------------------
def test_cache_holds_the_join(tmp_path):
    data = make_dataset(tmp_path)
    index = build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH, block_rows=8)
    rows = read_cache(index)
    ids = [r["clip_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(data["expected"])  # every clip once
    assert data["no_caption"] not in ids
    for r in rows:
        want = data["expected"][r["clip_id"]]
        assert r["split"] == want["split"] and r["phase"] == 1
        assert r["tokens"] == want["tokens"]  # caption order, truncated to MAX_LENGTH
        np.testing.assert_array_equal(np.array(r["target"], np.float16), want["target"])
    with pa.OSFile(index.entries[0].path, "rb") as fh:
        assert pa.ipc.open_file(fh).schema.field("target").type == pa.list_(pa.float16(), data["dim"])
    assert index.dim == data["dim"] and index.dtype == "float16"
    assert len(index.entries) == 3 and index.entries[1].dropped_duplicates == 1
    for split in ("train", "valid"):
        assert index.rows(split) == sum(r["split"] == split for r in data["expected"].values())
    # per-block counts in index.json match the files
    for entry in index.entries:
        for b, counts in enumerate(entry.blocks):
            got = [r for r in rows if r["block"] == (entry.path, b)]
            assert {s: sum(counts[s].values()) for s in counts} == {
                s: sum(r["split"] == s for r in got) for s in {r["split"] for r in got}}
    assert load_index(data["cache"]).to_json() == index.to_json()


def test_cache_is_reused_and_rebuilt_when_a_target_file_changes(tmp_path):
    data = make_dataset(tmp_path)
    index = build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH, block_rows=8)
    stamps = {e.path: os.stat(e.path).st_mtime_ns for e in index.entries}
    Path(index.entries[0].path + ".tmp-123-dead").write_bytes(b"half")  # a killed builder's leftover
    again = build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH, block_rows=8)
    assert {e.path: os.stat(e.path).st_mtime_ns for e in again.entries} == stamps  # nothing rewritten
    assert again.to_json() == index.to_json()
    assert not [p for p in os.listdir(data["cache"]) if ".tmp-" in p]

    # the last file changes: only its entry is rebuilt, with the new targets
    last = data["files"][2]
    table = pq.read_table(last)
    new = np.full((table.num_rows, data["dim"]), 0.5, np.float16)
    write_targets(Path(last), table["clip_id"].to_pylist(), table["split"].to_pylist(), new)
    rebuilt = build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH, block_rows=8)
    now = {e.path: os.stat(e.path).st_mtime_ns for e in rebuilt.entries}
    changed = [p for p in now if now[p] != stamps[p]]
    assert changed == [rebuilt.entries[2].path]
    last_ids = set(table["clip_id"].to_pylist())
    for r in read_cache(rebuilt):
        if r["clip_id"] in last_ids:
            assert r["target"] == [0.5] * data["dim"]

    # another max_length rebuilds everything
    build_cache(data["text"], data["targets"], data["cache"], 3, block_rows=8)
    assert all(len(t) <= 3 for r in read_cache(load_index(data["cache"])) for t in r["tokens"])


def _build_in_process(args):
    index = build_cache(*args, block_rows=8)
    return index.to_json()


def test_concurrent_builders_agree(tmp_path):
    data = make_dataset(tmp_path)
    args = (data["text"], data["targets"], data["cache"], MAX_LENGTH)
    with multiprocessing.get_context("fork").Pool(3) as pool:
        docs = pool.map(_build_in_process, [args] * 3)
    assert docs[0] == docs[1] == docs[2]
    assert len(read_cache(load_index(data["cache"]))) == len(data["expected"])
    assert not [p for p in os.listdir(data["cache"]) if ".tmp-" in p]


def test_phase_column_and_filter(tmp_path):
    data = make_dataset(tmp_path, files=(60, 60), phases=True)
    index = build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH, block_rows=8)
    songs = {c for c, r in data["expected"].items() if r["split"] == "train" and r["phase"] == 2}
    assert {r["clip_id"] for r in read_cache(index) if r["phase"] == 2 and r["split"] == "train"} == songs
    assert index.rows("train", {2}) == len(songs) and index.rows("train", {1, 2}) == index.rows("train")
    stream = PairStream(index, "train", 4, 0, 1, seed=0, memory_budget_gib=budget_for(index, 4, 16), phases={2})
    seen = ids_of(epoch(stream, 0))
    assert set(seen) <= songs and len(seen) == len(songs) // 4 * 4
    rows = [r for ids, _, _ in iter_rows(index, "train", phases={2}) for r in ids]
    assert sorted(rows) == sorted(songs)


def test_build_errors_name_the_problem(tmp_path):
    data = make_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no text.parquet"):
        build_cache(str(tmp_path / "nowhere"), data["targets"], data["cache"], MAX_LENGTH)
    with pytest.raises(FileNotFoundError, match="has no meta.json"):
        build_cache(data["text"], str(tmp_path / "text"), data["cache"], MAX_LENGTH)
    with pytest.raises(ValueError, match="no clip of splits"):
        build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH, splits=("test",))
    index = build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH, splits=("train", "test"))
    assert index.rows("test") == 0
    with pytest.raises(ValueError, match="no test rows in the cache"):
        PairStream(index, "test", 4, 0, 1, seed=0, memory_budget_gib=1.0)
    with pytest.raises(ValueError, match="no test rows in the cache .* to sample"):
        sample_targets(index, "test", 10, seed=0)
    with pytest.raises(ValueError, match="split 'valid' is not in the cache"):
        iter_rows(index, "valid")
    write_targets(Path(data["files"][1]), ["x"], ["train"], np.zeros((1, 7), np.float16))
    with pytest.raises(ValueError, match=r"part-1.parquet holds 7-D targets but meta.json says target_dim 12"):
        build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH)
    empty = tmp_path / "empty"
    empty.mkdir()
    storage.write_json(str(empty / layout.META), {"target_dim": 12})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_cache(data["text"], str(empty), data["cache"], MAX_LENGTH)


# -- the stream ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """600 clips in 4 target files, blocks of 16 rows."""
    root = tmp_path_factory.mktemp("stream")
    data = make_dataset(root, files=(150, 150, 160, 140))
    data["index"] = build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH, block_rows=16)
    return data


def test_epoch_covers_each_rank_once_and_ranks_are_disjoint(big):
    index, batch, world = big["index"], 8, 3
    budget = budget_for(index, batch, 48)
    streams = [PairStream(index, "train", batch, r, world, seed=1, memory_budget_gib=budget) for r in range(world)]
    steps = {s.steps_per_epoch for s in streams}
    assert len(steps) == 1
    per_rank = [ids_of(epoch(s, 0)) for s in streams]
    union: set[str] = set()
    for s, ids in zip(streams, per_rank):
        assert len(ids) == len(set(ids)) == s.steps_per_epoch * batch  # each row at most once, equal steps
        assert not union & set(ids)  # two ranks never yield the same clip
        union |= set(ids)
    assert union <= train_ids(big)
    assert sum(streams[0].rank_rows) == len(train_ids(big))
    remainder = sum(rows - len(ids) for rows, ids in zip(streams[0].rank_rows, per_rank))
    assert len(train_ids(big)) - len(union) == remainder < world * batch + world * index.block_rows
    assert max(streams[0].rank_rows) - min(streams[0].rank_rows) <= index.block_rows
    assert ids_of(epoch(streams[0], 1)) != per_rank[0]  # another order next epoch
    # the same seed gives the same sequence; another seed another one
    twin = PairStream(index, "train", batch, 0, world, seed=1, memory_budget_gib=budget)
    assert ids_of(epoch(twin, 0)) == per_rank[0]
    other = PairStream(index, "train", batch, 0, world, seed=2, memory_budget_gib=budget)
    assert ids_of(epoch(other, 0)) != per_rank[0]


def test_rank_keeps_its_blocks_across_epochs(big):
    index = big["index"]
    stream = PairStream(index, "train", 8, 1, 2, seed=3, memory_budget_gib=budget_for(index, 8, 48))
    mine = {c for ids, _, _ in _unit_rows(index, stream.units) for c in ids}
    for e in range(3):
        assert set(ids_of(epoch(stream, e))) <= mine


def _unit_rows(index, units):
    return st._block_rows(index, units, "train", None)


def test_batch_contents(big):
    index, batch = big["index"], 8
    budget = budget_for(index, batch, 40)
    stream = PairStream(index, "train", batch, 0, 1, seed=0, memory_budget_gib=budget, pad_id=-1)
    picked: dict[str, list] = {}
    for b in epoch(stream, 0):
        assert b["input_ids"].dtype == b["attention_mask"].dtype == st.torch.long
        assert b["target"].dtype == st.torch.float32 and b["target"].shape == (batch, big["dim"])
        for i, cid in enumerate(b["clip_ids"]):
            want = big["expected"][cid]
            np.testing.assert_array_equal(b["target"][i].numpy(), want["target"].astype(np.float32))
            n = int(b["attention_mask"][i].sum())
            toks = b["input_ids"][i, :n].tolist()
            assert toks in want["tokens"]
            assert (b["input_ids"][i, n:] == -1).all() and (b["attention_mask"][i, n:] == 0).all()
            picked[cid] = toks
    # the caption is a function of (seed, epoch, clip): another world or rank picks the same one
    for r in range(2):
        other = PairStream(index, "train", batch, r, 2, seed=0, memory_budget_gib=budget, pad_id=-1)
        for b in epoch(other, 0):
            for i, cid in enumerate(b["clip_ids"]):
                if cid in picked:
                    assert b["input_ids"][i, : int(b["attention_mask"][i].sum())].tolist() == picked[cid]
    # and varies over epochs for clips with several captions
    later = {cid: b["input_ids"][i, : int(b["attention_mask"][i].sum())].tolist()
             for b in epoch(stream, 1) for i, cid in enumerate(b["clip_ids"])}
    multi = [c for c in picked if c in later and len({tuple(t) for t in big["expected"][c]["tokens"]}) > 1]
    assert multi and any(picked[c] != later[c] for c in multi)


def test_resume_is_the_tail_and_reads_only_its_windows(big):
    index, batch = big["index"], 8
    stream = PairStream(index, "train", batch, 0, 1, seed=5, memory_budget_gib=budget_for(index, batch, 40))
    full = epoch(stream, 2)
    assert len(full) == stream.steps_per_epoch
    windows = stream.windows(2)
    assert len(windows) >= 4
    bounds = np.cumsum([0] + [sum(u.rows for u in w) for w in windows])
    on_boundary = [int(b) // batch for b in bounds[1:-1] if b % batch == 0]
    straddling = [int(b) // batch for b in bounds[1:-1] if b % batch]
    assert on_boundary and straddling
    end_window = int(np.searchsorted(bounds, stream.steps_per_epoch * batch - 1, side="right")) - 1
    for k in sorted({1, on_boundary[0], straddling[0], stream.steps_per_epoch - 1, stream.steps_per_epoch}):
        stream.blocks_read = 0
        tail = epoch(stream, 2, k)
        assert len(tail) == len(full) - k
        for a, b in zip(tail, full[k:]):
            assert a["clip_ids"] == b["clip_ids"]
            assert all((a[x] == b[x]).all() for x in ("input_ids", "attention_mask", "target"))
        if k < stream.steps_per_epoch:
            first_window = int(np.searchsorted(bounds, k * batch, side="right")) - 1
            assert stream.blocks_read == sum(len(w) for w in windows[first_window : end_window + 1])
        else:
            assert stream.blocks_read == 0
    with pytest.raises(ValueError, match="start_step"):
        stream.batches(2, stream.steps_per_epoch + 1)


def test_window_rows_follow_the_budget(big):
    index, batch = big["index"], 8
    small = PairStream(index, "train", batch, 0, 1, seed=0, memory_budget_gib=budget_for(index, batch, 32))
    large = PairStream(index, "train", batch, 0, 1, seed=0, memory_budget_gib=budget_for(index, batch, 128))
    for s in (small, large):
        plan = s.memory_plan()
        used = (plan["windows_in_memory"] * plan["window_rows"] * plan["row_bytes"] + 2 * plan["batch_bytes"]
                + batch * index.dim * index.itemsize + plan["block_bytes"] + st.RUNTIME_RESERVE)
        assert used <= plan["budget_bytes"]
        assert all(sum(u.rows for u in w) <= plan["window_rows"] for w in s.windows(0))
    assert small.window_rows == 32 and large.window_rows == 128
    assert len(small.windows(0)) > len(large.windows(0))
    single = PairStream(index, "train", batch, 0, 1, seed=0, memory_budget_gib=budget_for(index, batch, 32),
                        prefetch=False)
    assert single.memory_plan()["windows_in_memory"] == 1 and single.window_rows > 32
    assert ids_of(epoch(single, 0)) != ids_of(epoch(small, 0))  # bigger windows, another shuffle
    assert sorted(ids_of(epoch(single, 0))) == sorted(ids_of(epoch(single, 0)))


def test_pinned_window_rows_give_the_same_batches_under_another_budget(big):
    index = big["index"]
    first = PairStream(index, "train", 8, 0, 1, seed=0, memory_budget_gib=budget_for(index, 8, 40))
    pinned = PairStream(index, "train", 8, 0, 1, seed=0, memory_budget_gib=budget_for(index, 8, 100),
                        window_rows=first.window_rows)
    assert ids_of(epoch(pinned, 0)) == ids_of(epoch(first, 0))
    with pytest.raises(ValueError, match="window_rows 100 must be >= 16 .* fit the memory budget"):
        PairStream(index, "train", 8, 0, 1, seed=0, memory_budget_gib=budget_for(index, 8, 40), window_rows=100)


def test_too_small_budget_fails_before_reading(tmp_path):
    data = make_dataset(tmp_path)
    index = build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH, block_rows=8)
    for e in index.entries:
        os.remove(e.path)  # any read would fail
    with pytest.raises(ValueError) as err:
        PairStream(index, "train", 4, 0, 1, seed=0, memory_budget_gib=1e-6)
    msg = str(err.value)
    assert "memory budget 1e-06 GiB" in msg and "batch of 4 rows" in msg and "at least" in msg
    row_bytes = st.memory_plan(index, 4, 1.0, 8)["row_bytes"]
    assert f"rows of {row_bytes} bytes" in msg


def test_stream_argument_errors(big):
    index = big["index"]
    budget = budget_for(index, 8, 48)
    with pytest.raises(ValueError, match="rank 2 of world 2"):
        PairStream(index, "train", 8, 2, 2, seed=0, memory_budget_gib=budget)
    with pytest.raises(ValueError, match="rank 0 of world 0"):
        PairStream(index, "train", 8, 0, 0, seed=0, memory_budget_gib=budget)
    rows = index.rows("train")
    with pytest.raises(ValueError, match=rf"{rows} train rows over 2 rank\(s\) give \d+ rows .* one batch of {rows}"):
        PairStream(index, "train", rows, 0, 2, seed=0, memory_budget_gib=budget_for(index, rows, 48))
    with pytest.raises(ValueError, match="split 'test' is not in the cache"):
        PairStream(index, "test", 8, 0, 1, seed=0, memory_budget_gib=budget)
    with pytest.raises(ValueError, match="no train rows of phases \\[2\\]"):
        PairStream(index, "train", 8, 0, 1, seed=0, memory_budget_gib=budget, phases={2})


def test_prefetch_does_not_change_the_batches(big):
    index = big["index"]
    stream = PairStream(index, "train", 8, 1, 2, seed=4, memory_budget_gib=budget_for(index, 8, 32))
    ahead = epoch(stream, 3)
    stream.prefetch = False  # same windows, read in the consuming thread
    assert [b["clip_ids"] for b in epoch(stream, 3)] == [b["clip_ids"] for b in ahead]


def test_closing_early_stops_the_loader(big):
    index = big["index"]
    stream = PairStream(index, "train", 8, 0, 1, seed=0, memory_budget_gib=budget_for(index, 8, 32))
    it = stream.batches(0)
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("pair-stream")]
    assert stream.blocks_read <= sum(len(w) for w in stream.windows(0)[:2])


def test_iter_rows_and_sample_targets(big):
    index, expected = big["index"], big["expected"]
    valid = {c for c, r in expected.items() if r["split"] == "valid"}
    chunks = list(iter_rows(index, "valid"))
    got = [c for ids, _, _ in chunks for c in ids]
    assert sorted(got) == sorted(valid)
    for ids, toks, targets in chunks:
        assert targets.dtype == np.float16 and targets.shape == (len(ids), big["dim"])
        for cid, t, row in zip(ids, toks, targets):
            assert t == expected[cid]["tokens"]
            np.testing.assert_array_equal(row, expected[cid]["target"])
    shares = [[c for ids, _, _ in iter_rows(index, "train", r, 3) for c in ids] for r in range(3)]
    assert sorted(sum(shares, [])) == sorted(train_ids(big))
    sizes = [len(ids) for ids, _, _ in iter_rows(index, "train", block_rows=50)]
    assert all(s == 50 for s in sizes[:-1]) and sum(sizes) == len(train_ids(big))

    sample = sample_targets(index, "train", 40, seed=7)
    assert sample.dtype == np.float32 and sample.shape == (40, big["dim"])
    pool = {expected[c]["target"].astype(np.float32).tobytes() for c in train_ids(big)}
    assert all(row.tobytes() in pool for row in sample)
    assert len({row.tobytes() for row in sample}) == 40
    np.testing.assert_array_equal(sample, sample_targets(index, "train", 40, seed=7))
    assert not np.array_equal(sample, sample_targets(index, "train", 40, seed=8))
    everything = sample_targets(index, "train", 10**6, seed=0)
    assert {row.tobytes() for row in everything} == pool


# -- memory ---------------------------------------------------------------------------------------
def random_float16(rng, shape) -> np.ndarray:
    """Finite random float16 values fast: random bits with the top exponent bit cleared (|x| < 2)."""
    return (np.frombuffer(rng.bytes(int(np.prod(shape)) * 2), np.uint16) & 0xBBFF).view(np.float16).reshape(shape)


# The child's own peak: /proc VmHWM, reset after the imports. (ru_maxrss would not do: Linux keeps
# the larger of it and the parent's peak across exec, and pytest is the larger here.)
CHILD = """
import json, re, sys
import pyarrow as pa, pyarrow.compute as pc
from musictext.train.stream import PairStream, load_index
pc.equal(pa.array(["a"]), "a")  # Arrow's compute kernels initialise on first use (~34 MB, once per process)

def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

stream = PairStream(load_index(sys.argv[1]), "train", 64, 0, 1, seed=0, memory_budget_gib=float(sys.argv[2]))
open("/proc/self/clear_refs", "w").write("5")  # peak := now
base = status("VmRSS")
n = sum(len(b["clip_ids"]) for b in stream.batches(0))
print(json.dumps({"base": base, "peak": status("VmHWM"), "rows": n, "plan": stream.memory_plan()}))
"""


def test_stream_memory_stays_within_the_budget(tmp_path):
    dim, budget, files = 4096, 0.06, 4
    rows_per_file = int(0.15 * GIB / (dim * 2) / files) + 1  # 0.15 GiB of float16 targets, 2.5x the budget
    rng = np.random.default_rng(0)
    (tmp_path / "targets").mkdir()
    (tmp_path / "text").mkdir()
    uris, ids_all = [], []
    for f in range(files):
        ids = [f"m{f}-{i}" for i in range(rows_per_file)]
        write_targets(tmp_path / "targets" / f"p{f}.parquet", ids, ["train"] * len(ids),
                      random_float16(rng, (len(ids), dim)))
        uris.append(str(tmp_path / "targets" / f"p{f}.parquet"))
        ids_all += ids
    storage.write_json(str(tmp_path / "targets" / layout.TARGET_SHARDS), {"files": uris})
    storage.write_json(str(tmp_path / "targets" / layout.META), {"target_dim": dim})
    n = len(ids_all)
    text = pa.table({"clip_id": ids_all, "split": ["train"] * n, "caption_index": pa.array(np.zeros(n, np.int32)),
                     "text": ["x"] * n, "input_ids": pa.array([[101, 7, 8, 102]] * n, pa.list_(pa.int32())),
                      "phase": pa.array(np.ones(n, np.int8))},
                    schema=schema.TEXT_SCHEMA)
    pq.write_table(text, tmp_path / "text" / layout.TEXT)
    build_cache(str(tmp_path / "text"), str(tmp_path / "targets"), str(tmp_path / "cache"), 32)
    dataset = n * dim * 2
    assert dataset >= 2 * budget * GIB

    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path / "cache"), str(budget)],
                         capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    growth = report["peak"] - report["base"]
    assert report["rows"] == n // 64 * 64
    assert report["plan"]["windows_in_memory"] * report["plan"]["window_rows"] < n / 2
    assert growth < budget * GIB, (growth / 1024**2, report)
    assert growth > report["plan"]["window_rows"] * dim * 2  # it did measure the windows


def test_a_dataset_of_one_block_is_shared_by_every_rank(tmp_path):
    """Fewer blocks than ranks: blocks are cut into slices, so no rank is left without rows."""
    data = make_dataset(tmp_path, files=(60,))
    index = build_cache(data["text"], data["targets"], data["cache"], MAX_LENGTH)  # one 256-row block
    streams = [PairStream(index, "train", 8, r, 2, seed=0, memory_budget_gib=0.5) for r in range(2)]
    ids = [set(ids_of(epoch(s, 1))) for s in streams]
    assert streams[0].steps_per_epoch >= 2 and not ids[0] & ids[1]
    assert abs(streams[0].rank_rows[0] - streams[0].rank_rows[1]) <= 1
    shares = [{c for chunk_ids, _, _ in st.iter_rows(index, "train", r, 2) for c in chunk_ids} for r in range(2)]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == train_ids(data)
