"""Where every artifact keeps its files: the one place stages agree on names and directory shapes.

Every KFP Dataset/Model artifact is a directory (its ``.path`` locally, its ``.uri`` in a bucket):

- raw shard (ingest):     manifest.jsonl (TRACK rows) + audio/<file> + rejected.jsonl
- clips shard (clip):     clips.parquet (CLIP_SCHEMA) + audio/<rendering>/<clip>.<wav|flac> + rejected.jsonl
- targets (embed):        <family>/targets.parquet (target_schema) + meta.json + rejected.jsonl
- index (embed):          index.json (clip and target shard URIs, upstream rejections)
- gathered targets:       shards.json (the target files, read in place) + meta.json + rejected.jsonl
- text (text):            text.parquet (TEXT_SCHEMA) + meta.json + rejected.jsonl
- model (train):          model/ (config.json + model.safetensors + tokenizer) + train_state.json
                          + checkpoints/ (step-*.pt, checkpoints.json) + tensorboard/
- evaluation (evaluate):  metrics.json + plots
- run (report):           metrics.json + report.html + rejected.json + checkpoints/

A stage reads its inputs through the helpers here, never through another stage's program.
"""

from __future__ import annotations

import pyarrow as pa

from musictext import storage

MANIFEST = "manifest.jsonl"
CLIPS = "clips.parquet"
TARGETS = "targets.parquet"
TEXT = "text.parquet"
REJECTED = "rejected.jsonl"
META = "meta.json"
INDEX = "index.json"
CORPUS_MD = "corpus.md"  # per-source statistics of the indexed clips (Markdown)
TARGET_SHARDS = "shards.json"  # in a family's gathered targets dir: the target files to read

MODEL_DIR = "model"  # the trained TextEmbedder inside a training stage's output
STATE_FILE = "train_state.json"
CONFIG_FILE = "config.json"  # TextEmbedder.save_to
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
PLOT_RANKS = "rank_histogram.png"
PLOT_SIM = "similarity.png"
REPORT_HTML = "report.html"
REJECTED_JSON = "rejected.json"  # a run's rejections, all stages
CHECKPOINTS = "checkpoints"
TENSORBOARD_DIR = "tensorboard"  # a training stage's TensorBoard events, inside its model artifact


def read_clips(clips_dirs: list[str], columns: list[str] | None = None) -> pa.Table:
    """All clip shards in one table, plus ``shard_dir`` to resolve the relative audio paths."""
    if not clips_dirs:
        raise ValueError("no clip shard directories given")
    tables = []
    for shard_dir in clips_dirs:
        table_uri = storage.join(shard_dir, CLIPS)
        if not storage.exists(table_uri):
            raise FileNotFoundError(f"clip shard {shard_dir} has no {CLIPS}")
        table = storage.read_parquet(table_uri, columns=columns)
        dirs = pa.array([shard_dir] * table.num_rows, pa.string())
        tables.append(table.append_column("shard_dir", dirs))
    return pa.concat_tables(tables)


def read_index(index_dir: str) -> dict:
    """The shard index: {"shards": clip shard URIs, "targets": target shard URIs, "rejected": [...]}."""
    return storage.read_json(storage.join(index_dir, INDEX))


def index_shards(index_dir: str) -> list[str]:
    return list(read_index(index_dir)["shards"])


def index_rejections(index_dir: str) -> list[dict]:
    return list(read_index(index_dir).get("rejected", []))


def target_files(targets_dir: str) -> list[str]:
    """The Parquet files of a targets dataset: one targets.parquet, or a gathered shard list."""
    listing = storage.join(targets_dir, TARGET_SHARDS)
    if storage.exists(listing):
        return list(storage.read_json(listing)["files"])
    return [storage.join(targets_dir, TARGETS)]


def model_location(model_dir: str) -> str:
    """Accept a save_pretrained directory or a training stage's output holding ``model/``."""
    nested = storage.join(model_dir, MODEL_DIR)
    return nested if storage.exists(storage.join(nested, CONFIG_FILE)) else model_dir
