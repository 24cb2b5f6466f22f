"""Audio targets computed exactly as Navidrome's sidecar computes them.

Public API: ``enrich``, ``music2latent_features``, ``window_starts``, ``build_embedder``,
``AudioEmbedder``; the families (configs, adapters, loaders) live in
``musictext.audio.families``; ``musictext.embed.targets.embed_clips`` is the KFP step.
"""

from musictext.audio.embedder import AudioEmbedder, build_embedder
from musictext.audio.families.base import FamilyAdapter
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
    "cut_windows",
    "enrich",
    "music2latent_features",
    "prepare_waveform",
    "to_mono",
    "window_starts",
]
