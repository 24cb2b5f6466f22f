"""Audio targets computed exactly as Navidrome's sidecar computes them.

Public API: ``enrich``, ``music2latent_features``, ``window_starts``, ``build_embedder``,
``AudioEmbedder``, ``target_dim_for``; ``musictext.audio.targets.embed_clips`` for the KFP step.
"""

from musictext.audio.embedder import AudioEmbedder, FamilyAdapter, build_embedder, target_dim_for
from musictext.audio.features import (
    cut_windows,
    enrich,
    music2latent_features,
    prepare_waveform,
    to_mono,
    window_starts,
)

__all__ = [
    "AudioEmbedder",
    "FamilyAdapter",
    "build_embedder",
    "target_dim_for",
    "cut_windows",
    "enrich",
    "music2latent_features",
    "prepare_waveform",
    "to_mono",
    "window_starts",
]
