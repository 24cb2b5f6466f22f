"""Zero-shot tagging against hand-computed AUCs and sklearn, genre/mood accuracy, the t-SNE/UMAP
maps, and the pipeline's evaluation with the clips' tags (KFP headline numbers)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from musictext import layout, schema, storage
from musictext.evaluate.projection import MIN_TRACKS, colour_tags, projection_plots
from musictext.evaluate.tagging import (
    facet_accuracy, prompt_vectors, tag_vocabulary, tagging_metrics, track_tag_sets, zero_shot_tagging,
)
from musictext_kfp.evaluate_cli import source_facets

PNG = b"\x89PNG\r\n\x1a\n"

# Four tracks; cosine with the "rock" prompt (axis 0) and the "sad" prompt (axis 1) as chosen.
ROCK = np.array([0.9, 0.6, 0.5, 0.1])
SAD = np.array([0.1, 0.7, 0.2, 0.6])
AUDIO = np.stack([ROCK, SAD, np.sqrt(1 - ROCK**2 - SAD**2)], axis=1)
TAGS = [["Rock", "calm"], ["sad", "calm"], ["rock", "calm"], ["sad", "calm"]]
PROMPTS = {"a rock track": [1.0, 0, 0], "a sad track": [0, 1.0, 0], "a calm track": [0, 0, 1.0],
           "rock music": [0, 0, 1.0]}


def lookup(texts: list[str]) -> np.ndarray:
    """A text embedder with known outputs: each prompt's vector is fixed above."""
    return np.array([PROMPTS[t] for t in texts])


def test_zero_shot_auc_by_hand_and_equal_to_sklearn():
    out = zero_shot_tagging(lookup, AUDIO, TAGS, top=None)
    rock, sad = out["per_tag"]["rock"], out["per_tag"]["sad"]
    # rock: positives t0 (.9), t2 (.5); negatives t1 (.6), t3 (.1): 3 of 4 pairs ordered -> 0.75;
    # ranking t0+ t1- t2+ t3-: AP = (1 + 2/3) / 2
    assert rock["roc_auc"] == pytest.approx(0.75) and rock["pr_auc"] == pytest.approx(5 / 6)
    assert sad["roc_auc"] == 1.0 and sad["pr_auc"] == 1.0
    assert rock["roc_auc"] == pytest.approx(roc_auc_score([1, 0, 1, 0], ROCK))
    assert rock["pr_auc"] == pytest.approx(average_precision_score([1, 0, 1, 0], ROCK))
    assert out["macro"] == {"roc_auc": pytest.approx(0.875), "pr_auc": pytest.approx((5 / 6 + 1) / 2)}
    assert out["chance"] == {"roc_auc": 0.5, "pr_auc": 0.5}  # both tags on half the tracks
    assert out["skipped"] == [{"tag": "calm", "reason": "no negative track"}]  # on every track
    assert out["n_tags"] == 2 and out["n_tracks"] == 4


def test_skipped_tag_without_positive_and_random_scores_match_sklearn():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(50, 4)), rng.random((50, 4)) < 0.3
    labels[:, 3] = False
    out = tagging_metrics(scores, labels, ["a", "b", "c", "d"])
    assert out["skipped"] == [{"tag": "d", "reason": "no positive track"}]
    for j, tag in enumerate("abc"):
        assert out["per_tag"][tag]["roc_auc"] == pytest.approx(roc_auc_score(labels[:, j], scores[:, j]))
        assert out["per_tag"][tag]["pr_auc"] == pytest.approx(average_precision_score(labels[:, j], scores[:, j]))


def test_templates_are_averaged_and_checked():
    vecs = prompt_vectors(lookup, ["rock"], ["a {tag} track", "{tag} music"])
    assert vecs[0] == pytest.approx(np.array([1, 0, 1]) / np.sqrt(2))
    with pytest.raises(ValueError, match="no {tag} placeholder"):
        prompt_vectors(lookup, ["rock"], ["a track"])


def test_vocabulary_and_facets():
    sets = track_tag_sets([["Rock ", "sad"], ["rock", "hip  hop"], ["jazz"]])
    assert sets[1] == {"rock", "hip hop"}  # case and spaces normalised
    assert tag_vocabulary(sets) == ["rock", "hip hop", "jazz", "sad"]  # by count, then by name
    assert tag_vocabulary(sets, top=1) == ["rock"] and tag_vocabulary(sets, min_count=2) == ["rock"]
    words = source_facets()
    assert {"rock", "hip hop", "jazz", "ambient"} <= words["genre"]
    assert {"sad", "dreamy", "calm"} <= words["mood"] and "ambient" not in words["mood"]


def test_genre_accuracy_by_hand():
    vocab = ["rock", "jazz", "pop", "sad"]
    scores = np.array([[0.9, 0.1, 0.0, 0.0], [0.8, 0.2, 0.1, 0.0], [0.1, 0.0, 0.7, 0.9], [0.0, 0.0, 0.0, 1.0]])
    tags = [{"rock"}, {"jazz"}, {"pop", "rock"}, {"sad"}]
    acc = facet_accuracy(scores, tags, vocab, ["rock", "jazz", "pop"])
    # track 0: rock (right); 1: rock (wrong, jazz); 2: pop (right); 3 has no genre: left out
    assert acc == {"accuracy": pytest.approx(2 / 3), "chance": pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3),
                   "n_tracks": 3, "tags": ["rock", "jazz", "pop"]}
    assert facet_accuracy(scores, tags, vocab, ["sad"]) is None  # one candidate: no choice to make


def test_projections_tsne_and_umap():
    rng = np.random.default_rng(0)
    n = 12
    audio = rng.normal(size=(n, 8))
    text = np.repeat(audio, 2, axis=0) + 0.1 * rng.normal(size=(2 * n, 8))
    tags = [{"rock" if k % 2 else "jazz", "live"} if k < 10 else set() for k in range(n)]
    assert colour_tags(tags, n=2)[:3] == ["jazz", "rock", "jazz"] and colour_tags(tags, n=2)[-1] == "other"
    plots, notes = projection_plots(text, np.repeat(np.arange(n), 2), audio, tags, ("tsne", "umap"), title="t")
    assert set(plots) == {"tsne", "umap"} and all(p.startswith(PNG) for p in plots.values()) and notes == []
    few, why = projection_plots(text[:4], [0, 0, 1, 1], audio[:2], tags[:2], ("tsne",))
    assert few == {} and why == [f"projections skipped: 2 tracks, at least {MIN_TRACKS} are needed"]
    with pytest.raises(ValueError, match="unknown projection 'pca'"):
        projection_plots(text, np.repeat(np.arange(n), 2), audio, tags, ("pca",))


@pytest.fixture(scope="module")
def toy_with_tags(toy_dataset, tiny_base_model, tmp_path_factory):
    """The toy split, a model, and a clip index whose clips carry the words of their captions
    that name a toy genre or mood as tags."""
    from musictext.config import TextConfig
    from musictext.text_encoder import TextEmbedder

    from tests.toy import GENRES, MOODS

    root, _ = toy_dataset(n_clips=60, block_dim=8, captions_per_clip=2)
    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("tagmodel") / "model"
    TextEmbedder.from_base(TextConfig(base_model=tiny_base_model, hidden_dim=32), 24).save_pretrained(model_dir)
    text = storage.read_parquet(storage.join(str(root / "text"), layout.TEXT))
    tags: dict[str, list[str]] = {}
    for cid, caption in zip(text["clip_id"].to_pylist(), text["text"].to_pylist()):
        words = caption.replace(",", " ").split()
        tags.setdefault(cid, [w for w in words if w in GENRES or w in MOODS])
    shard = tmp_path_factory.mktemp("clips")
    ids = sorted(tags)
    rows = {"clip_id": ids, "track_id": [i.split("#")[0] for i in ids], "source": ["toy"] * len(ids),
            "split": ["test"] * len(ids), "audio": [[] for _ in ids], "start_s": [0.0] * len(ids),
            "end_s": [1.0] * len(ids), "captions": [[] for _ in ids], "tags": [tags[i] for i in ids],
            "licence": ["CC0-1.0"] * len(ids), "phase": [1] * len(ids)}
    storage.write_parquet(str(shard / layout.CLIPS), pa.table(rows, schema=schema.CLIP_SCHEMA))
    index = tmp_path_factory.mktemp("index")
    storage.write_json(str(index / layout.INDEX), {"shards": [str(shard)], "targets": [], "rejected": []})
    return root, model_dir, index, tags


def test_pipeline_evaluation_with_clip_tags(toy_with_tags, tmp_path):
    from musictext.evaluate.core import headline
    from musictext.evaluate.retrieval import evaluate

    root, model_dir, index, tags = toy_with_tags
    m = evaluate(str(model_dir), str(root / "text"), str(root / "targets"), str(tmp_path / "eval"), family="muq",
                 clips_index_dir=str(index), projections=(), facets=source_facets())
    tagging = m["tagging"]
    assert tagging["n_tracks"] == m["n_tracks"] == m["n_test"]
    test_tags = {t for cid, ts in tags.items() for t in ts if cid.startswith("toy")}
    assert set(tagging["per_tag"]) | {s["tag"] for s in tagging["skipped"]} <= test_tags
    assert tagging["n_tags"] >= 2 and 0.0 <= tagging["macro"]["roc_auc"] <= 1.0
    assert tagging["genre_accuracy"] is not None and tagging["mood_accuracy"] is not None
    flat = headline(m)
    assert flat["tagging/roc_auc_macro"] == tagging["macro"]["roc_auc"]
    assert flat["text_to_audio/R@1"] == m["text_to_audio"]["R@1"] and flat["chance/R@1"] == m["chance"]["R@1"]
    assert flat["audio_to_text/mAP@10"] == m["audio_to_text"]["mAP@10"]
    assert "median_rank" in json.dumps(flat)
    summary = (tmp_path / "eval" / "summary.md").read_text()
    assert "macro ROC-AUC" in summary and "genre accuracy" in summary
