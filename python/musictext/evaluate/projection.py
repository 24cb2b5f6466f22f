"""t-SNE (scikit-learn) and UMAP (umap-learn) maps of the text and audio vectors, coloured by tag.

Both modalities are mapped together, so the two panels share coordinates: a caption near its
track's audio means the spaces agree; two separate clouds show a modality gap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from musictext.evaluate.plots import png, pyplot

METHODS = ("tsne", "umap")
MIN_TRACKS = 10  # fewer tracks make no readable map (and t-SNE's perplexity needs points)
MAX_POINTS = 3000  # text + audio points mapped; more tracks are subsampled (seeded)
N_COLOURS = 8  # the most frequent tags get a colour each; the rest are "other"


def colour_tags(tag_sets: Sequence[set[str]], n: int = N_COLOURS) -> list[str]:
    """Each track's label: its most frequent tag among the ``n`` most frequent overall, else
    "other". A tag every tagged track carries tells nothing apart, so it colours nothing."""
    counts = Counter(t for tags in tag_sets for t in tags)
    tagged = sum(1 for tags in tag_sets if tags)
    telling = {t: c for t, c in counts.items() if c < tagged} or counts
    top = [t for t, _ in sorted(telling.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]
    return [next((t for t in top if t in tags), "other") for tags in tag_sets]


def map_2d(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """[n, 2] coordinates of ``x`` by cosine distance. One OpenMP thread: the same map on every
    machine, and no oversubscription stalls on a CPU-limited pod (t-SNE's threads spin)."""
    from threadpoolctl import threadpool_limits

    n = len(x)
    if method not in METHODS:
        raise ValueError(f"unknown projection {method!r}; known: {', '.join(METHODS)}")
    with threadpool_limits(limits=1, user_api="openmp"):
        if method == "tsne":
            from sklearn.manifold import TSNE

            return TSNE(n_components=2, perplexity=float(min(30.0, (n - 1) / 3)), metric="cosine",
                        init="pca", random_state=seed).fit_transform(x)
        import umap

        return umap.UMAP(n_neighbors=min(15, n - 1), metric="cosine", random_state=seed,
                         n_jobs=1).fit_transform(x)


def _subsample(n_tracks: int, text_track: np.ndarray, seed: int) -> np.ndarray:
    """Tracks to keep so that tracks + their captions stay within MAX_POINTS."""
    per_track = 1 + len(text_track) / max(n_tracks, 1)
    keep = min(n_tracks, int(MAX_POINTS / per_track))
    if keep >= n_tracks:
        return np.arange(n_tracks)
    return np.sort(np.random.default_rng(seed).choice(n_tracks, size=keep, replace=False))


def projection_png(text: np.ndarray, text_track: np.ndarray, audio: np.ndarray, labels: list[str],
                   method: str, title: str, seed: int = 0) -> bytes:
    tracks = _subsample(len(audio), text_track, seed)
    remap = -np.ones(len(audio), dtype=np.int64)
    remap[tracks] = np.arange(len(tracks))
    caps = np.flatnonzero(remap[text_track] >= 0)
    x = np.concatenate([audio[tracks], text[caps]]).astype(np.float64)
    xy = map_2d(x, method, seed)
    audio_xy, text_xy = xy[: len(tracks)], xy[len(tracks) :]
    audio_lab = [labels[t] for t in tracks]
    text_lab = [labels[t] for t in text_track[caps]]
    names = sorted(set(audio_lab), key=lambda t: (t == "other", t))
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    colour = {t: ("#bbbbbb" if t == "other" else cmap(i % 10)) for i, t in enumerate(names)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True, sharey=True)
    for ax, pts, lab, what in ((axes[0], text_xy, text_lab, "text (captions)"), (axes[1], audio_xy, audio_lab, "audio (tracks)")):
        for t in names:
            sel = np.array([lab_ == t for lab_ in lab], dtype=bool)
            if sel.any():
                ax.scatter(pts[sel, 0], pts[sel, 1], s=10, color=colour[t], label=t, alpha=0.8)
        ax.set_title(what)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="tag")
    shown = f"{len(tracks)} of {len(audio)} tracks" if len(tracks) < len(audio) else f"{len(audio)} tracks"
    fig.suptitle(f"{title} ({method}, {shown}, {len(caps)} captions)")
    return png(fig)


def projection_plots(text: np.ndarray, text_track: Sequence[int], audio: np.ndarray,
                     tag_sets: Sequence[set[str]], methods: Sequence[str] = METHODS, title: str = "",
                     seed: int = 0) -> tuple[dict[str, bytes], list[str]]:
    """({"tsne": png, "umap": png}, notes): a note instead of a picture when there are too few
    tracks or no tags to colour by."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown projection {m!r}; known: {', '.join(METHODS)}")
    if not methods:
        return {}, []
    if len(audio) < MIN_TRACKS:
        return {}, [f"projections skipped: {len(audio)} tracks, at least {MIN_TRACKS} are needed"]
    notes = []
    labels = colour_tags(tag_sets)
    if all(lab == "other" for lab in labels):
        notes.append("no track has a tag: projections are not coloured by tag")
    text_track = np.asarray(text_track, dtype=np.int64)
    return {m: projection_png(text, text_track, audio, labels, m, title, seed) for m in methods}, notes
