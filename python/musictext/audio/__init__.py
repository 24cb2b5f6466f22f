"""Audio targets computed exactly as Navidrome's sidecar computes them.

Public API: ``build_embedder(cfg.audio)`` -> ``AudioEmbedder`` (``embed_file(path)``: the vector
the upload path stores for a file; ``load_file`` + ``embed_loaded``: the same, batched;
``model`` / ``processor``: the loaded model with its upstream call signature), ``enrich``,
``music2latent_features``, ``window_starts``; the families (configs, adapters, loaders) live in
``musictext.audio.families``, the upload-path file loaders in ``musictext.audio.decode``;
``musictext.embed.targets.embed_clips`` is the KFP step.
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
