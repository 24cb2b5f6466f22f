"""Finding and loading exported text embedders (what ``export`` writes into a run's
checkpoints/): ``{name}_best_r1.pt`` for Navidrome's record, ``{name}_text_embedder/`` for our
own tools. ``name`` is Navidrome's model id (muq, mert, latent), the family's ``export_name``.

The service, the search and the evaluation all load models through here, so none of them
imports the export stage.
"""

from __future__ import annotations

import posixpath

from musictext import storage
from musictext.audio.families import FAMILY_NAMES, family
from musictext.text_encoder import TextEmbedder

EMBEDDER_SUFFIX = "text_embedder"


def export_name(family_name: str) -> str:
    """Navidrome's model id of a family (music2latent -> latent)."""
    return family(family_name).export_name


def family_of(name: str) -> str:
    """The family a Navidrome model id (or a family name) belongs to; ValueError if none."""
    for f in FAMILY_NAMES:
        if name in (f, export_name(f)):
            return f
    known = sorted({export_name(f) for f in FAMILY_NAMES} | set(FAMILY_NAMES))
    raise ValueError(f"unknown model {name!r}; known: {known}")


def embedder_dir(models_dir: str, name: str) -> str:
    return storage.join(models_dir, f"{name}_{EMBEDDER_SUFFIX}")


def find_exports(models_dir: str) -> dict[str, str]:
    """{Navidrome model id: its ``{name}_text_embedder`` location} under ``models_dir`` (a run's
    checkpoints/ or any local/bucket directory holding exports)."""
    fs, root = storage.fs_for(models_dir)
    if not fs.exists(root):
        raise FileNotFoundError(f"models directory {models_dir} does not exist")
    found = {}
    for f in FAMILY_NAMES:
        name = export_name(f)
        location = embedder_dir(models_dir, name)
        if storage.exists(posixpath.join(location, "config.json") if "://" not in location
                          else storage.join(location, "config.json")):
            found[name] = location
    return found


def load_export(location: str) -> TextEmbedder:
    """The exported text embedder at ``location`` (a ``{name}_text_embedder`` dir), in eval mode."""
    return TextEmbedder.from_pretrained(location)
