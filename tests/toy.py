"""A learnable toy task and a tiny base model, for tests and timing (no audio needed).

Each clip has a genre, a mood and an instrument; its enriched-style target is built from
per-word random vectors, one combination per block (mean: genre+mood, robust: instrument+genre,
dmean: mood+instrument), plus a little per-clip noise, then globally L2-normalised. Captions
name the three words in varied templates, so text can (only) learn the target from the words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from musictext import layout, schema, storage

GENRES = ["rock", "jazz", "techno", "folk", "metal", "reggae", "blues", "ambient", "punk", "soul"]
MOODS = ["happy", "sad", "calm", "angry", "dreamy", "dark", "playful", "epic"]
INSTRUMENTS = ["piano", "guitar", "violin", "drums", "synth", "flute", "organ", "trumpet"]
TEMPLATES = [
    "a {mood} {genre} song with {inst}",
    "{genre} track, {mood} mood, lots of {inst}",
    "{inst} over a {mood} {genre} groove",
    "{mood} {inst} in a {genre} style",
]


def toy_targets(rng: np.random.Generator, attrs: np.ndarray, block_dim: int, noise: float) -> np.ndarray:
    g, m, i = attrs.T
    vg, vm, vi = (rng.standard_normal((n, block_dim)) for n in (len(GENRES), len(MOODS), len(INSTRUMENTS)))
    blocks = [vg[g] + vm[m], 0.7 * (vi[i] + vg[g]), 0.4 * (vm[m] + vi[i])]
    x = np.concatenate(blocks, axis=1) + noise * rng.standard_normal((len(attrs), 3 * block_dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_toy_dataset(
    text_dir: str,
    targets_dir: str,
    tokenizer,
    n_clips: int = 200,
    block_dim: int = 16,
    captions_per_clip: int = 3,
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    noise: float = 0.05,
    max_length: int = 64,
) -> dict:
    """text.parquet (TEXT_SCHEMA) + targets.parquet (target_schema) + meta.json files."""
    rng = np.random.default_rng(seed)
    attrs = np.stack(
        [rng.integers(len(GENRES), size=n_clips), rng.integers(len(MOODS), size=n_clips),
         rng.integers(len(INSTRUMENTS), size=n_clips)], axis=1,
    )
    targets = toy_targets(rng, attrs, block_dim, noise)
    bounds = np.cumsum(np.array(splits) / sum(splits)) * n_clips
    split = [schema.SPLITS[int(np.searchsorted(bounds, k, side="right"))] for k in range(n_clips)]
    clip_ids = [f"toy{k:05d}#0" for k in range(n_clips)]

    rows = {"clip_id": [], "split": [], "caption_index": [], "text": [], "input_ids": [], "phase": []}
    for k, (g, m, i) in enumerate(attrs):
        order = rng.permutation(len(TEMPLATES))[:captions_per_clip]
        for c, t in enumerate(order):
            text = TEMPLATES[t].format(genre=GENRES[g], mood=MOODS[m], inst=INSTRUMENTS[i])
            ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
            for key, val in zip(rows, (clip_ids[k], split[k], c, text, ids, 1)):
                rows[key].append(val)
    storage.write_parquet(storage.join(text_dir, layout.TEXT), pa.table(rows, schema=schema.TEXT_SCHEMA))
    storage.write_json(storage.join(text_dir, layout.META), {"n_clips": n_clips, "toy": True})

    dim = 3 * block_dim
    target_col = pa.FixedSizeListArray.from_arrays(pa.array(targets.reshape(-1), pa.float32()), dim)
    table = pa.table(
        [pa.array(clip_ids), pa.array(split), target_col], schema=schema.target_schema(dim)
    )
    storage.write_parquet(storage.join(targets_dir, layout.TARGETS), table)
    storage.write_json(storage.join(targets_dir, layout.META), {"target_dim": dim, "toy": True})
    return {"n_clips": n_clips, "target_dim": dim, "splits": {s: split.count(s) for s in schema.SPLITS}}


def read_targets(targets_dir: str, split: str) -> tuple[list[str], np.ndarray]:
    """(clip ids, [N, dim] float32 targets) of one split of a targets dataset."""
    tables = [storage.read_parquet(uri, columns=["clip_id", "split", "target"]) for uri in layout.target_files(targets_dir)]
    table = pa.concat_tables(tables)
    table = table.filter(pc.equal(table["split"], split))
    ids = table["clip_id"].to_pylist()
    if not ids:
        return [], np.zeros((0, 0), dtype=np.float32)
    col = table["target"].combine_chunks()
    return ids, col.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), col.type.list_size).astype(np.float32)


def write_tiny_base_model(directory: str | Path, hidden: int = 32, layers: int = 2) -> str:
    """A random tiny BERT with the MiniLM tokenizer: a fast stand-in base model for tests."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from musictext.hub import resolve_pretrained

    directory = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained("all-MiniLM-L6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return str(directory)
