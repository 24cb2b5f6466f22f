"""Evaluate a trained TextEmbedder on a held-out split: retrieval both ways, per-block checks."""

from __future__ import annotations

import io
import logging

import numpy as np

from musictext import layout, storage
from musictext.metrics import chance_metrics, cosine_matrix, positive_ranks, metrics_from_ranks
from musictext.pairs import load_split
from musictext.layout import METRICS_FILE, PLOT_RANKS, PLOT_SIM, model_location
from musictext.text_encoder import BLOCK_NAMES, TextEmbedder

log = logging.getLogger(__name__)

HEATMAP_MAX = 64  # clips shown in the similarity heatmap


def block_diagnostics(pred: np.ndarray, target: np.ndarray, n_blocks: int = 3) -> dict:
    """Per enrichment block (mean | robust | dmean, always all three): mean cosine between the
    predicted and target sub-vectors over rows where both are non-zero, and each side's mean share
    of the (unit) vector's energy; ``full``: the mean cosine of the whole vectors.

    A block that is all-zero in the targets (MuQ's robust/dmean for clips ≤120 s) has no
    defined cosine; its energies still show whether the model learned to leave it empty.
    """
    out = {}
    dim = pred.shape[1] // n_blocks
    for b, name in enumerate(BLOCK_NAMES[:n_blocks]):
        p, t = pred[:, b * dim : (b + 1) * dim], target[:, b * dim : (b + 1) * dim]
        pn, tn = np.linalg.norm(p, axis=1), np.linalg.norm(t, axis=1)
        ok = (pn > 1e-8) & (tn > 1e-8)
        cos = (p[ok] * t[ok]).sum(1) / (pn[ok] * tn[ok])
        out[name] = {
            "cosine": float(cos.mean()) if ok.any() else None,
            "n_defined": int(ok.sum()),
            "target_energy": float((tn**2).mean()),
            "pred_energy": float((pn**2).mean()),
        }
    full = (pred * target).sum(1) / np.maximum(
        np.linalg.norm(pred, axis=1) * np.linalg.norm(target, axis=1), 1e-12
    )
    out["full"] = {"cosine": float(full.mean())}
    return out


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def rank_histogram_png(ranks_t2a: np.ndarray, ranks_a2t: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    n = int(max(ranks_t2a.max(), ranks_a2t.max()))
    bins = np.arange(1, n + 2) - 0.5 if n <= 50 else 50
    ax.hist([ranks_t2a, ranks_a2t], bins=bins, label=["text→audio", "audio→text"])
    ax.set_xlabel("rank of the true match")
    ax.set_ylabel("queries")
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def similarity_png(sim: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = min(HEATMAP_MAX, sim.shape[0])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(sim[:k, :k], cmap="viridis", aspect="auto")
    ax.set_xlabel("audio target (clip)")
    ax.set_ylabel("caption (clip)")
    # Say when the matrix is cut, so a reader does not take 64 rows for the whole test set.
    ax.set_title(title if k == sim.shape[0] else f"{title} (first {k} of {sim.shape[0]})")
    fig.colorbar(im, ax=ax)
    return _png(fig)


# What the report says about the targets, from the targets' meta.json (what the embed stage ran).
TARGET_FACTS = ("family", "kind", "model", "random_init", "target_dim", "sample_rate", "clip_rendering")


def targets_meta(targets_dir: str) -> dict:
    """The facts of ``TARGET_FACTS`` that the targets' meta.json records (none when it has no meta)."""
    meta_uri = storage.join(targets_dir, layout.META)
    meta = storage.read_json(meta_uri) if storage.exists(meta_uri) else {}
    return {k: meta[k] for k in TARGET_FACTS if k in meta}


def evaluate(
    model_dir: str,
    text_dir: str,
    targets_dir: str,
    out_dir: str,
    split: str = "test",
    family: str | None = None,
) -> dict:
    """Write metrics.json and plots to ``out_dir``; return the metrics dict."""
    model = TextEmbedder.from_pretrained(model_location(model_dir))
    data = load_split(text_dir, targets_dir, split, model.max_length)
    if len(data) == 0:
        raise ValueError(f"no {split} clips with both captions and targets")
    targets = targets_meta(targets_dir)
    family = family or str(targets.get("family", "unknown"))
    log.info("evaluating %s on %d %s clips", family, len(data), split)
    # The query path Navidrome uses: raw text through the embedder's own tokenizer.
    pred = model.embed_texts(data.first_captions())
    sim = cosine_matrix(pred, data.targets)  # [caption i, clip j]
    truth = np.arange(len(data))
    ranks_t2a = positive_ranks(sim, truth)
    ranks_a2t = positive_ranks(sim.T, truth)
    metrics = {
        "family": family,
        "split": split,
        "n_test": len(data),
        "text_to_audio": metrics_from_ranks(ranks_t2a),
        "audio_to_text": metrics_from_ranks(ranks_a2t),
        "chance": chance_metrics(len(data)),
        "blocks": block_diagnostics(pred, data.targets),
        "targets": targets,
    }
    plots = {
        "rank_histogram": (PLOT_RANKS, rank_histogram_png(ranks_t2a, ranks_a2t, f"{family}: ranks ({split})")),
        "similarity": (PLOT_SIM, similarity_png(sim, f"{family}: cosine similarity")),
    }
    metrics["plots"] = {}
    for key, (name, png) in plots.items():
        uri = storage.join(out_dir, name)
        storage.write_bytes(uri, png)
        metrics["plots"][key] = uri
    storage.write_json(storage.join(out_dir, METRICS_FILE), metrics)
    log.info("%s text→audio %s", family, metrics["text_to_audio"])
    return metrics
