"""PNG figures of an evaluation (matplotlib, headless), returned as bytes for files and HTML."""

from __future__ import annotations

import base64
import io

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend: the stages and the CLI run without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode()


def cosine_histogram_png(pos: np.ndarray, neg: np.ndarray, title: str) -> bytes:
    """Positive (caption, its track) against negative (caption, another track) cosines, each
    normalised to a density so a sample of negatives compares with all positives."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lo = float(min(pos.min(), neg.min())) if len(neg) else float(pos.min())
    hi = float(max(pos.max(), neg.max())) if len(neg) else float(pos.max())
    bins = np.linspace(lo, hi + 1e-9, 41)
    ax.hist(neg, bins=bins, density=True, alpha=0.6, label=f"negatives (n={len(neg)})")
    ax.hist(pos, bins=bins, density=True, alpha=0.6, label=f"positives (n={len(pos)})")
    ax.set_xlabel("cosine(caption, track)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    return png(fig)


HEATMAP_MAX = 64  # audio rows shown in the similarity heatmap


def rank_histogram_png(ranks_t2a: np.ndarray, ranks_a2t: np.ndarray, title: str) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    n = int(max(ranks_t2a.max(), ranks_a2t.max()))
    bins = np.arange(1, n + 2) - 0.5 if n <= 50 else 50
    ax.hist([ranks_t2a, ranks_a2t], bins=bins, label=["text→audio", "audio→text"])
    ax.set_xlabel("rank of the true match (ties counted against it)")
    ax.set_ylabel("queries")
    ax.set_title(title)
    ax.legend()
    return png(fig)


def similarity_png(sim: np.ndarray, total: int, title: str) -> bytes:
    """``sim`` [caption of audio row i, audio row j] for the first rows of ``total``."""
    plt = pyplot()
    k = sim.shape[0]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(sim, cmap="viridis", aspect="auto")
    ax.set_xlabel("audio")
    ax.set_ylabel("a caption of each")
    # Say when the matrix is cut, so a reader does not take 64 rows for the whole test set.
    ax.set_title(title if k == total else f"{title} (first {k} of {total})")
    fig.colorbar(im, ax=ax)
    return png(fig)
