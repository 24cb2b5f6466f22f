"""One evaluation of text and audio vectors, whatever produced them (the pipeline's test split, or
``musictext evaluate`` on a records file): retrieval both ways with chance, per-block cosine,
positive/negative cosines, zero-shot tagging and maps; then metrics.json, report.html (plots
embedded) and summary.md.

The unit is the track: every caption is a text->audio query against the unique tracks, every
track an audio->text query against all captions (each of its own captions relevant).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from musictext import storage
from musictext.evaluate.plots import (
    HEATMAP_MAX,
    cosine_histogram_png,
    rank_histogram_png,
    similarity_png,
)
from musictext.metrics import (
    KS,
    RANK_BLOCK,
    Ranking,
    chunk_rows,
    cosine_matrix,
    pos_neg_cosines,
    positive_pairs,
    retrieval_both_ways,
    unit_rows,
)
from musictext.text_encoder import BLOCK_NAMES

log = logging.getLogger(__name__)

K_MAP = 10
N_EXAMPLES = 5  # best and worst text->audio queries shown in the report
SUMMARY_MD = "summary.md"
REPORT_HTML = "report.html"
METRICS_JSON = "metrics.json"
PLOT_COSINES = "cosine_histogram.png"
RETRIEVAL_KEYS = tuple(f"R@{k}" for k in KS) + ("MRR", f"mAP@{K_MAP}", "median_rank")


@dataclass
class EvalSet:
    """Vectors to evaluate. ``text`` [Q, dim]: one row per caption, ``text_track[q]`` its track;
    ``audio`` [A, dim]: one row per track, or per clip with ``audio_track[a]`` its track (several
    clips of one track are all relevant to its captions). Per track: ``track_ids`` and ``tags``;
    per audio row: ``audio_ids`` (default: the track ids)."""

    text: np.ndarray
    text_track: np.ndarray
    audio: np.ndarray
    track_ids: list[str]
    captions: list[str]
    tags: list[list[str]] | None = None
    audio_track: np.ndarray | None = None
    audio_ids: list[str] | None = None

    def __post_init__(self):
        self.text_track = np.asarray(self.text_track, dtype=np.int64)
        if self.audio_track is None:
            if len(self.track_ids) != len(self.audio):
                raise ValueError(f"{len(self.track_ids)} track ids for {len(self.audio)} audio vectors")
            self.audio_track = np.arange(len(self.audio))
        self.audio_track = np.asarray(self.audio_track, dtype=np.int64)
        if self.audio_ids is None:
            self.audio_ids = [self.track_ids[t] for t in self.audio_track]
        if len(self.audio_track) != len(self.audio) or len(self.audio_ids) != len(self.audio):
            raise ValueError(f"{len(self.audio_track)} track indices and {len(self.audio_ids)} ids "
                             f"for {len(self.audio)} audio vectors")
        if len(self.captions) != len(self.text) or len(self.text_track) != len(self.text):
            raise ValueError(f"{len(self.captions)} captions and {len(self.text_track)} track indices "
                             f"for {len(self.text)} text vectors")
        if self.tags is not None and len(self.tags) != len(self.track_ids):
            raise ValueError(f"{len(self.tags)} tag lists for {len(self.track_ids)} tracks")
        if len(self.audio) and len(self.text) and self.text.shape[1] != self.audio.shape[1]:
            raise ValueError(f"text vectors are {self.text.shape[1]}-D but audio vectors are "
                             f"{self.audio.shape[1]}-D: the model and the audio space do not match")

    def track_audio(self) -> np.ndarray:
        """[N tracks, dim] float64: each track's audio vector, the sum of its clips' unit vectors
        (a chunk of clips normalised at a time: no unit copy of all of them)."""
        out = np.zeros((len(self.track_ids), self.audio.shape[1]))
        step = chunk_rows(self.audio.shape[1])
        for lo in range(0, len(self.audio), step):
            np.add.at(out, self.audio_track[lo : lo + step], unit_rows(self.audio[lo : lo + step]))
        return out


@dataclass
class EvalOptions:
    templates: Sequence[str] = ("a {tag} track",)
    top_tags: int | None = 50
    genres: Sequence[str] | None = None
    moods: Sequence[str] | None = None
    facets: dict[str, set[str]] | None = None  # {"genre": words, "mood": words} for the accuracies
    projections: Sequence[str] = ("tsne", "umap")
    block: int = RANK_BLOCK
    seed: int = 0
    extra: dict = field(default_factory=dict)  # facts copied into metrics.json as they are


def block_diagnostics(pred: np.ndarray, target: np.ndarray, n_blocks: int = 3,
                      pairs: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Per enrichment block (mean | robust | dmean, always all three): mean cosine between the
    predicted and target sub-vectors over rows where both are non-zero, and each side's mean share
    of the (unit) vector's energy; ``full``: the mean cosine of the whole vectors.

    ``pairs`` (pred rows, target rows): the pairs to compare (default: row i with row i),
    gathered ``chunk_rows`` at a time, so memory follows the chunk, not the number of pairs.

    A block that is all-zero in the targets (MuQ's robust/dmean for clips <=120 s) has no
    defined cosine; its energies still show whether the model learned to leave it empty.
    """
    rows_p, rows_t = pairs if pairs is not None else (np.arange(len(pred)), np.arange(len(target)))
    names = BLOCK_NAMES[:n_blocks]
    sums = {name: np.zeros(4) for name in names}  # cosine sum, defined rows, target, pred energy
    full = 0.0
    dim, step = pred.shape[1] // n_blocks, chunk_rows(pred.shape[1])
    for lo in range(0, len(rows_p), step):
        p_all, t_all = pred[rows_p[lo : lo + step]], target[rows_t[lo : lo + step]]
        for b, name in enumerate(names):
            p, t = p_all[:, b * dim : (b + 1) * dim], t_all[:, b * dim : (b + 1) * dim]
            pn, tn = np.linalg.norm(p, axis=1), np.linalg.norm(t, axis=1)
            ok = (pn > 1e-8) & (tn > 1e-8)
            cos = (p[ok] * t[ok]).sum(1) / (pn[ok] * tn[ok])
            sums[name] += (cos.sum(dtype=np.float64), ok.sum(), (tn**2).sum(dtype=np.float64),
                           (pn**2).sum(dtype=np.float64))
        full += float(((p_all * t_all).sum(1) / np.maximum(
            np.linalg.norm(p_all, axis=1) * np.linalg.norm(t_all, axis=1), 1e-12)).sum(dtype=np.float64))
    n = len(rows_p)
    out = {}
    for name, (cos_sum, defined, t_energy, p_energy) in sums.items():
        out[name] = {
            "cosine": float(cos_sum / defined) if defined else None,
            "n_defined": int(defined),
            "target_energy": float(t_energy / n) if n else float("nan"),
            "pred_energy": float(p_energy / n) if n else float("nan"),
        }
    out["full"] = {"cosine": full / n if n else float("nan")}
    return out


def _examples(data: EvalSet, t2a: Ranking) -> dict:
    """The best and the worst text->audio queries, with the tracks ranked first."""
    order = np.lexsort((np.arange(len(t2a.ranks)), t2a.ranks))

    def row(q: int) -> dict:
        return {"caption": data.captions[q], "track": data.track_ids[data.text_track[q]],
                "rank": int(t2a.ranks[q]), "top": [data.audio_ids[g] for g in t2a.top[q, :3]]}

    n = min(N_EXAMPLES, len(order))
    return {"best": [row(q) for q in order[:n]], "worst": [row(q) for q in order[::-1][:n]]}


def _cosines(pos: np.ndarray, neg: np.ndarray) -> dict:
    out = {"positive_mean": float(pos.mean()), "n_positive": len(pos), "n_negative": len(neg)}
    if len(neg):
        out["negative_mean"] = float(neg.mean())
        out["gap"] = out["positive_mean"] - out["negative_mean"]
        # How often a positive pair beats a negative one (the AUC of the cosine as a matcher).
        out["positive_above_negative"] = float(np.searchsorted(np.sort(neg), pos, side="left").mean() / len(neg))
    return out


def evaluate_set(
    data: EvalSet,
    embed_texts: Callable[[list[str]], np.ndarray] | None = None,
    options: EvalOptions | None = None,
    title: str = "",
) -> tuple[dict, dict[str, bytes]]:
    """(metrics, {plot name: PNG bytes}) of one evaluation set. ``embed_texts`` (the model's)
    is needed for zero-shot tagging only."""
    from musictext.evaluate.projection import projection_plots
    from musictext.evaluate.tagging import track_tag_sets, zero_shot_tagging

    options = options or EvalOptions()
    if len(data.audio) < 2:
        raise ValueError(f"{len(data.audio)} audio vector(s) to evaluate: retrieval needs at least 2")
    summary, rankings = retrieval_both_ways(data.text, data.text_track, data.audio, data.audio_track,
                                            k=K_MAP, block=options.block)
    pos, neg = pos_neg_cosines(data.text, data.text_track, data.audio, data.audio_track, seed=options.seed)
    pq, pa = positive_pairs(data.text_track, data.audio_track)
    metrics = {
        **options.extra,
        "n_test": summary["n_audio"],  # the text->audio gallery: one vector per track or clip
        "n_tracks": summary["n_tracks"],
        "n_captions": summary["n_captions"],
        "text_to_audio": summary["text_to_audio"],
        "audio_to_text": summary["audio_to_text"],
        "chance": summary["chance_text_to_audio"],  # the run report's "chance": text->audio's
        "chance_audio_to_text": summary["chance_audio_to_text"],
        "ties": "pessimistic: an item scoring equal to the true one ranks above it",
        "blocks": block_diagnostics(data.text, data.audio, pairs=(pq, pa)),
        "cosines": _cosines(pos, neg),
        "examples": _examples(data, rankings["text_to_audio"]),
    }
    label = f"{title}: " if title else ""
    plots = {
        "rank_histogram": rank_histogram_png(rankings["text_to_audio"].ranks, rankings["audio_to_text"].ranks,
                                             f"{label}ranks of the true match"),
        "similarity": similarity_png(*_first_pairs(data), f"{label}cosine similarity"),
        "cosine_histogram": cosine_histogram_png(pos, neg, f"{label}caption-audio cosine"),
    }
    tag_sets = track_tag_sets(data.tags) if data.tags is not None else None
    tagging = tag_sets is not None and embed_texts is not None
    # The track vectors are T x dim float64: made once, and only when tagging or a map uses them.
    track_audio = data.track_audio() if tagging or options.projections else None
    if tagging:
        metrics["tagging"] = zero_shot_tagging(
            embed_texts, track_audio, data.tags, templates=options.templates, top=options.top_tags,
            genres=options.genres, moods=options.moods, facets=options.facets,
        )
    else:
        metrics["tagging"] = {"note": "skipped: no tags given" if tag_sets is None
                              else "skipped: no text model"}
    maps, notes = {}, []
    if options.projections:
        maps, notes = projection_plots(data.text, data.text_track, track_audio,
                                       tag_sets or [set()] * len(data.track_ids), options.projections,
                                       title=title, seed=options.seed)
    plots.update({f"projection_{m}": p for m, p in maps.items()})
    metrics["projection_notes"] = notes
    return metrics, plots


def _first_pairs(data: EvalSet) -> tuple[np.ndarray, int]:
    """The cosine matrix of the first HEATMAP_MAX audio rows against one caption of each (so the
    diagonal holds the matches), and how many audio rows there are in all."""
    rows = np.arange(min(HEATMAP_MAX, len(data.audio)))
    first_caption = {}
    for q, t in enumerate(data.text_track):
        first_caption.setdefault(int(t), q)
    caps = [first_caption[int(data.audio_track[a])] for a in rows]
    return cosine_matrix(data.text[caps], data.audio[rows]), len(data.audio)


def headline(metrics: dict) -> dict[str, float]:
    """The numbers to compare across runs (KFP Metrics, the CLI table): flat name -> float."""
    out: dict[str, float] = {}
    for direction in ("text_to_audio", "audio_to_text", "chance", "chance_audio_to_text"):
        for name, value in (metrics.get(direction) or {}).items():
            out[f"{direction}/{name}"] = float(value)
    out["n_test"] = float(metrics["n_test"])
    for name in ("n_tracks", "n_captions"):
        if name in metrics:
            out[name] = float(metrics[name])
    for block, diag in (metrics.get("blocks") or {}).items():
        if diag.get("cosine") is not None:  # undefined where the target block is all zero
            out[f"block_cosine/{block}"] = float(diag["cosine"])
    for name in ("positive_mean", "negative_mean", "gap"):
        if name in (metrics.get("cosines") or {}):
            out[f"cosine/{name}"] = float(metrics["cosines"][name])
    tagging = metrics.get("tagging") or {}
    for name, value in (tagging.get("macro") or {}).items():
        if value is not None:
            out[f"tagging/{name}_macro"] = float(value)
    for facet in ("genre", "mood"):
        acc = tagging.get(f"{facet}_accuracy")
        if acc:
            out[f"tagging/{facet}_accuracy"] = float(acc["accuracy"])
            out[f"tagging/{facet}_accuracy_chance"] = float(acc["chance"])
    return out


def write_outputs(out_dir: str, metrics: dict, plots: dict[str, bytes], title: str) -> dict:
    """PNGs, metrics.json (plot URIs under ``plots``), report.html and summary.md in ``out_dir``."""
    from musictext.evaluate.render import report_html, summary_markdown

    metrics = dict(metrics)
    metrics["plots"] = dict(metrics.get("plots") or {})
    for name, data in plots.items():
        uri = storage.join(out_dir, f"{name}.png")
        storage.write_bytes(uri, data)
        metrics["plots"][name] = uri
    storage.write_json(storage.join(out_dir, METRICS_JSON), metrics)
    storage.write_bytes(storage.join(out_dir, REPORT_HTML), report_html(metrics, plots, title).encode())
    storage.write_bytes(storage.join(out_dir, SUMMARY_MD), summary_markdown(metrics, title).encode())
    log.info("%s: text->audio %s", title, json.dumps(metrics["text_to_audio"]))
    return metrics
