"""Audio targets computed exactly as Navidrome's sidecar computes them.

Public API: ``build_embedder(cfg.audio)`` -> ``AudioEmbedder`` (``embed_file(path)``: the vector
the upload path stores for a file; ``load_file`` + ``embed_loaded``: the same, batched;
``model`` / ``processor``: the loaded model with its upstream call signature), ``enrich``,
``music2latent_features``, ``window_starts``; the families (configs, adapters, loaders) live in
``musictext.audio.families``, the upload-path file loaders in ``musictext.audio.decode``;
``musictext.embed.targets.embed_clips`` is the KFP step.
"""

import importlib

# Public name -> the module that defines it. Imported on first use (PEP 562), so importing a
# submodule (the family configs, the decoders) does not load torch through this package.
_EXPORTS = {
    "AudioEmbedder": "musictext.audio.embedder",
    "build_embedder": "musictext.audio.embedder",
    "FamilyAdapter": "musictext.audio.families.base",
    "cut_windows": "musictext.audio.features",
    "enrich": "musictext.audio.features",
    "music2latent_features": "musictext.audio.features",
    "prepare_waveform": "musictext.audio.features",
    "to_mono": "musictext.audio.features",
    "window_starts": "musictext.audio.features",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


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
