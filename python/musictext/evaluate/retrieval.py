"""Evaluate a trained TextEmbedder on a held-out split of the pipeline's data: retrieval both
ways (every caption a query, pessimistic ties, chance), per-block cosine, cosine histograms,
zero-shot tagging when the clips' tags are at hand, and maps (``musictext.evaluate.core``)."""

from __future__ import annotations

import logging

import numpy as np

from musictext import layout, storage
from musictext.evaluate.core import (
    EvalOptions,
    EvalSet,
    block_diagnostics,
    evaluate_set,
    write_outputs,
)
from musictext.evaluate.plots import rank_histogram_png, similarity_png  # noqa: F401  (re-exported)
from musictext.evaluate.projection import METHODS
from musictext.layout import model_location
from musictext.pairs import SplitData, load_split
from musictext.text_encoder import TextEmbedder

__all__ = ["block_diagnostics", "evaluate", "split_eval_set", "targets_meta", "track_of_clip"]

log = logging.getLogger(__name__)

# What the report says about the targets, from the targets' meta.json (what the embed stage ran).
TARGET_FACTS = ("family", "kind", "model", "random_init", "target_dim", "sample_rate", "clip_rendering")


def targets_meta(targets_dir: str) -> dict:
    """The facts of ``TARGET_FACTS`` that the targets' meta.json records (none when it has no meta)."""
    meta_uri = storage.join(targets_dir, layout.META)
    meta = storage.read_json(meta_uri) if storage.exists(meta_uri) else {}
    return {k: meta[k] for k in TARGET_FACTS if k in meta}


def track_of_clip(clip_id: str) -> str:
    """The clip stage names clips "<track_id>#<k>"; an id without "#" is its own track."""
    return clip_id.rsplit("#", 1)[0] if "#" in clip_id else clip_id


def clip_tags(clips_index_dir: str) -> dict[str, list[str]]:
    """{clip_id: tags} of every clip shard the index lists."""
    table = layout.read_clips(layout.index_shards(clips_index_dir), columns=["clip_id", "tags"])
    return dict(zip(table["clip_id"].to_pylist(), (t or [] for t in table["tags"].to_pylist())))


def split_eval_set(data: SplitData, text: np.ndarray | None, tags_by_clip: dict[str, list[str]] | None,
                   embed_texts=None) -> EvalSet:
    """Clips grouped by track: each audio row is a clip, each distinct caption of a track one
    query (clips of a track share its captions). ``text``: the captions' vectors, or None to
    compute them with ``embed_texts``."""
    track_ids: list[str] = []
    index: dict[str, int] = {}
    audio_track = []
    for cid in data.clip_ids:
        track = track_of_clip(cid)
        if track not in index:
            index[track] = len(track_ids)
            track_ids.append(track)
        audio_track.append(index[track])
    captions, text_track, seen = [], [], set()
    for t, caps in zip(audio_track, data.captions):
        for cap in caps:
            if (t, cap) not in seen:
                seen.add((t, cap))
                captions.append(cap)
                text_track.append(t)
    tags = None
    if tags_by_clip is not None:
        merged: list[dict[str, None]] = [{} for _ in track_ids]
        for t, cid in zip(audio_track, data.clip_ids):
            merged[t].update(dict.fromkeys(tags_by_clip.get(cid, [])))
        tags = [list(m) for m in merged]
    vectors = text if text is not None else embed_texts(captions)
    return EvalSet(text=np.asarray(vectors), text_track=np.array(text_track), audio=data.targets,
                   track_ids=track_ids, captions=captions, tags=tags, audio_track=np.array(audio_track),
                   audio_ids=list(data.clip_ids))


def evaluate(
    model_dir: str,
    text_dir: str,
    targets_dir: str,
    out_dir: str,
    split: str = "test",
    family: str | None = None,
    clips_index_dir: str | None = None,
    projections: tuple[str, ...] = METHODS,
    facets: dict[str, set[str]] | None = None,
) -> dict:
    """Write metrics.json, plots, report.html and summary.md to ``out_dir``; return the metrics.
    ``clips_index_dir`` (the clip shard index) supplies the clips' tags for zero-shot tagging;
    ``facets`` ({"genre": words, "mood": words}) the tags that count for genre/mood accuracy."""
    model = TextEmbedder.from_pretrained(model_location(model_dir))
    data = load_split(text_dir, targets_dir, split, model.max_length)
    if len(data) == 0:
        raise ValueError(f"no {split} clips with both captions and targets")
    targets = targets_meta(targets_dir)
    family = family or str(targets.get("family", "unknown"))
    log.info("evaluating %s on %d %s clips", family, len(data), split)
    tags = clip_tags(clips_index_dir) if clips_index_dir else None
    # The query path Navidrome uses: raw text through the embedder's own tokenizer.
    evalset = split_eval_set(data, None, tags, model.embed_texts)
    options = EvalOptions(projections=projections, facets=facets,
                          extra={"family": family, "split": split, "targets": targets})
    title = f"{family}: {split} split"
    metrics, plots = evaluate_set(evalset, model.embed_texts, options, title=title)
    return write_outputs(out_dir, metrics, plots, title)
