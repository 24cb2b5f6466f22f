"""Zero-shot tagging: each tag becomes a text prompt ("a {tag} track"), each track is scored by
the cosine between its audio vector and the prompt's vector, and the scores are judged against
the records' tags.

ROC-AUC and PR-AUC (average precision) per tag and their macro means over the tags that have both
positive and negative tracks: the protocol of MuQ-MuLan's MagnaTagATune table (top-50 tags).
Genre and mood accuracy: among the tags recognised as genres (moods: a given list, or a vocabulary
such as the sources' own), the highest-scoring one must be one of the track's own; tracks without
such a tag are left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

DEFAULT_TEMPLATES = ("a {tag} track",)
TOP_TAGS = 50  # MagnaTagATune's usual benchmark: the 50 most frequent tags


def normalise_tag(tag: str) -> str:
    return " ".join(tag.strip().lower().split())


def track_tag_sets(track_tags: Iterable[Iterable[str]]) -> list[set[str]]:
    return [{normalise_tag(t) for t in tags if t and t.strip()} for tags in track_tags]


def tag_vocabulary(tag_sets: Sequence[set[str]], top: int | None = TOP_TAGS, min_count: int = 1) -> list[str]:
    """The ``top`` most frequent tags with at least ``min_count`` tracks (ties: alphabetical)."""
    counts = Counter(t for tags in tag_sets for t in tags)
    ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return ranked[:top] if top else ranked


def check_templates(templates: Sequence[str]) -> list[str]:
    templates = list(templates)
    if not templates:
        raise ValueError("no prompt template given")
    for t in templates:
        if "{tag}" not in t:
            raise ValueError(f"prompt template {t!r} has no {{tag}} placeholder")
    return templates


def prompt_vectors(
    embed_texts: Callable[[list[str]], np.ndarray], tags: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> np.ndarray:
    """[T, dim] unit vectors: each tag's prompts (one per template) embedded, averaged, renormalised."""
    templates = check_templates(templates)
    texts = [t.format(tag=tag) for tag in tags for t in templates]
    vecs = np.asarray(embed_texts(texts), dtype=np.float64).reshape(len(tags), len(templates), -1).mean(axis=1)
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)


def label_matrix(tag_sets: Sequence[set[str]], vocab: Sequence[str]) -> np.ndarray:
    """[N, T] bool: track n carries tag t."""
    return np.array([[t in tags for t in vocab] for tags in tag_sets], dtype=bool).reshape(len(tag_sets), len(vocab))


def zero_shot_scores(audio: np.ndarray, tag_vectors: np.ndarray) -> np.ndarray:
    """[N, T] cosine between each track's audio vector and each tag's prompt vector."""
    a = np.asarray(audio, dtype=np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    return a @ np.asarray(tag_vectors, dtype=np.float64).T


def tagging_metrics(scores: np.ndarray, labels: np.ndarray, tags: Sequence[str]) -> dict:
    """Per tag ROC-AUC and PR-AUC (sklearn), macro means over the scored tags, and the skipped
    tags with the reason. PR-AUC's chance level is the tag's prevalence; ROC-AUC's is 0.5."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    per_tag, skipped = {}, []
    for j, tag in enumerate(tags):
        y = labels[:, j]
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == len(y):
            skipped.append({"tag": tag, "reason": "no negative track" if n_pos else "no positive track"})
            continue
        per_tag[tag] = {
            "roc_auc": float(roc_auc_score(y, scores[:, j])),
            "pr_auc": float(average_precision_score(y, scores[:, j])),
            "positives": n_pos,
            "prevalence": n_pos / len(y),
        }
    macro = {key: float(np.mean([m[key] for m in per_tag.values()])) if per_tag else None
             for key in ("roc_auc", "pr_auc")}
    chance = {"roc_auc": 0.5 if per_tag else None,
              "pr_auc": float(np.mean([m["prevalence"] for m in per_tag.values()])) if per_tag else None}
    return {"n_tracks": int(labels.shape[0]), "n_tags": len(per_tag), "macro": macro, "chance": chance,
            "per_tag": per_tag, "skipped": skipped}


def facet_accuracy(scores: np.ndarray, tag_sets: Sequence[set[str]], vocab: Sequence[str],
                   subset: Sequence[str]) -> dict | None:
    """Argmax over ``subset`` (tags of ``vocab``): correct when the chosen tag is one of the
    track's; over the tracks that carry at least one ``subset`` tag. None with fewer than two
    candidate tags or no such track. Chance: the mean share of the candidates a track carries."""
    cols = [vocab.index(t) for t in subset if t in vocab]
    names = [vocab[c] for c in cols]
    if len(cols) < 2:
        return None
    rows = [i for i, tags in enumerate(tag_sets) if tags & set(names)]
    if not rows:
        return None
    pick = np.asarray(scores)[np.ix_(rows, cols)].argmax(axis=1)
    correct = [names[p] in tag_sets[i] for i, p in zip(rows, pick)]
    chance = [len(tag_sets[i] & set(names)) / len(names) for i in rows]
    return {"accuracy": float(np.mean(correct)), "chance": float(np.mean(chance)),
            "n_tracks": len(rows), "tags": names}


def zero_shot_tagging(
    embed_texts: Callable[[list[str]], np.ndarray],
    audio: np.ndarray,
    track_tags: Sequence[Iterable[str]],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    top: int | None = TOP_TAGS,
    min_count: int = 1,
    genres: Sequence[str] | None = None,
    moods: Sequence[str] | None = None,
    facets: Mapping[str, Iterable[str]] | None = None,
) -> dict:
    """Everything above for one set of tracks: ``audio`` [N, dim], ``track_tags`` per track.
    ``genres``/``moods``: the candidate tags; by default the scored tags that ``facets``
    ({"genre": words, "mood": words}, e.g. the sources' vocabularies) names so."""
    tag_sets = track_tag_sets(track_tags)
    if len(tag_sets) != len(audio):
        raise ValueError(f"{len(tag_sets)} tag lists for {len(audio)} tracks")
    vocab = tag_vocabulary(tag_sets, top=top, min_count=min_count)
    if not vocab:
        return {"n_tracks": len(tag_sets), "n_tags": 0, "note": "no track has a tag", "templates": list(templates)}
    known = {f: {normalise_tag(w) for w in words} for f, words in (facets or {}).items()}
    subsets = {facet: [normalise_tag(t) for t in given] if given else [t for t in vocab if t in known.get(facet, ())]
               for facet, given in (("genre", genres), ("mood", moods))}
    # Given candidates outside the top tags are scored too, but only the top tags enter the AUCs.
    columns = vocab + sorted({t for s in subsets.values() for t in s} - set(vocab))
    scores = zero_shot_scores(audio, prompt_vectors(embed_texts, columns, templates))
    out = tagging_metrics(scores[:, : len(vocab)], label_matrix(tag_sets, vocab), vocab)
    out["templates"] = list(templates)
    for facet, subset in subsets.items():
        out[f"{facet}_accuracy"] = facet_accuracy(scores, tag_sets, columns, subset)
    return out
