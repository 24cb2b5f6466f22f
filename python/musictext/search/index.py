"""``index_library``: a music folder -> one family's Navidrome collection (see ``store``).

Each file's vector is what Navidrome's upload path stores for it (``AudioEmbedder.embed_file``:
the family's decode, windows, enrichment), computed with the shared decode-ahead pipeline of the
embed stage. Re-running skips files already in the collection (by path), so an interrupted or
grown library is finished, not redone. A file that cannot be embedded (undecodable, empty,
silent, mono for Music2Latent, ...) is skipped and listed in ``rejected.jsonl`` next to the db.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from musictext import storage
from musictext.audio.embedder import AudioEmbedder, build_embedder
from musictext.config import load_family_config
from musictext.embed.targets import ClipRef, embed_batches
from musictext.exports import export_name, find_exports
from musictext.library import list_audio, read_tags, title_from_filename
from musictext.layout import REJECTED
from musictext.rejects import Rejections
from musictext.search.basis import ReducedBasis, basis_in_export, load_basis
from musictext.search.store import (
    MILVUS_MAX_DIM,
    MODEL_ID_MAX_BYTES,
    NAME_MAX_BYTES,
    PATH_MAX_BYTES,
    Entry,
    LocalStore,
    MilvusStore,
    collection_name,
    default_db,
    fit_bytes,
    side_dir,
)

log = logging.getLogger(__name__)

STAGE = "index"
DASH = "\u2013"  # Navidrome's names are "artist – title" (en dash)


def model_id_of(audio_cfg, basis: ReducedBasis | None) -> str:
    """What the rows' ``model_id`` says: the checkpoint, whether it is a random-init stand-in, and
    the reduced basis; a collection never mixes two spaces (see MilvusStore.create_or_open)."""
    base = audio_cfg.model + ("+random-init" if audio_cfg.random_init else "")
    tag = basis.tag if basis else ""
    return fit_bytes(base, MODEL_ID_MAX_BYTES - len(tag)) + tag


def track_name(root: str, rel: str) -> str:
    """"artist – title" from the tags; else from an "Artist - Title" file name; else the stem
    (the library scanner's rules)."""
    track = read_tags(root, rel)
    artist, title = track.artist, track.title
    if not title:
        name_artist, title = title_from_filename(rel)
        artist = artist or name_artist
    return f"{artist} {DASH} {title}" if artist else title


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name (2)``, ``(3)``... when another row has it (it is the primary key)."""
    name = fit_bytes(name, NAME_MAX_BYTES - 16)  # room for a " (n)" suffix
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name} ({n})"
    taken.add(candidate)
    return candidate


def find_basis(family: str, models_dir: str | None) -> ReducedBasis | None:
    """The reduced basis shipped with the family's export under ``models_dir``, if any."""
    if not models_dir:
        return None
    location = find_exports(models_dir).get(export_name(family))
    uri = basis_in_export(location) if location else None
    return load_basis(uri) if uri else None


def write_rejections(directory, family: str, rejects: Rejections, paths: dict[str, str]) -> str:
    """rejected.jsonl keeps other families' rows and replaces this family's with this run's."""
    uri = str(directory / REJECTED)
    rows = [r for r in (storage.read_jsonl(uri) if os.path.exists(uri) else []) if r.get("family") != family]
    rows += [{**r, "family": family, "path": paths.get(r["item"], "")} for r in rejects.rows]
    directory.mkdir(parents=True, exist_ok=True)
    storage.write_jsonl(uri, rows)
    return uri


def index_library(
    library: str,
    family: str,
    profile: str = "production",
    db: str | None = None,
    *,
    models_dir: str | None = None,
    basis: str | None = None,
    max_milvus_dim: int = MILVUS_MAX_DIM,
    device: str | None = None,
    embedder: AudioEmbedder | None = None,
) -> dict:
    """Index every audio file under ``library`` (local folder or bucket URI) in ``family``'s
    space; returns a summary (counts, backend, where things went).

    A space wider than ``max_milvus_dim`` is projected with a reduced basis (``basis``, or the one
    in the family's export under ``models_dir``); without one it goes to an exact-search vector
    file instead of Milvus, with a warning. ``embedder`` reuses a loaded model (tests).
    """
    db = db or default_db()
    root = os.path.abspath(storage.local_path(library)) if storage.is_local(library) else library.rstrip("/")
    if not storage.exists(root):
        raise FileNotFoundError(f"music folder {library} does not exist")
    cfg = load_family_config(family, profile)
    full_dim = int(cfg.audio.target_dim)
    if embedder is not None and embedder.target_dim != full_dim:
        raise ValueError(f"the embedder gives {embedder.target_dim}-D vectors; {family} ({profile}) stores {full_dim}-D")
    reduced = load_basis(basis) if basis else (find_basis(family, models_dir) if full_dim > max_milvus_dim else None)
    if reduced and reduced.source_dim != full_dim:
        raise ValueError(f"{reduced.source}: projects {reduced.source_dim}-D vectors but {family} ({profile}) "
                         f"stores {full_dim}-D")
    dim = reduced.dim if reduced else full_dim
    model_id = model_id_of(cfg.audio, reduced)
    collection = collection_name(family)
    if dim <= max_milvus_dim:
        store = MilvusStore.create_or_open(db, collection, dim, model_id)
    else:
        if reduced:
            raise ValueError(f"{reduced.source}: its {dim} dimensions still exceed --max-milvus-dim {max_milvus_dim}")
        store = LocalStore.create_or_open(side_dir(db), collection, dim, model_id)
        log.warning("%s vectors have %d dimensions, over Milvus's limit of %d, and no reduced basis was found "
                    "(%s): indexing them for exact search in %s instead of Milvus", family, dim, max_milvus_dim,
                    f"no reduced_basis.npz in the {export_name(family)} export under {models_dir}" if models_dir
                    else "give --models with an export holding reduced_basis.npz, or --basis", store.vectors_file)

    rejects = Rejections(STAGE)
    paths: dict[str, str] = {}
    added = skipped = 0
    files: list[str] = []
    try:
        done = store.indexed()
        taken = set(done.values())
        files = list_audio(root)
        todo = []
        for rel in files:
            uri = storage.join(root, rel)
            paths[rel] = uri
            if uri in done:
                skipped += 1
                continue
            if len(uri.encode()) > PATH_MAX_BYTES:
                rejects.add(rel, f"path longer than {PATH_MAX_BYTES} bytes")
                continue
            todo.append(ClipRef(clip_id=rel, split="", uri=uri))
        log.info("%s: %d audio files, %d already indexed in %s, %d to embed", root, len(files), skipped,
                 collection, len(todo))
        added = _embed_into(store, embedder or build_embedder(cfg.audio, device), todo, reduced, root, taken,
                            rejects, desc=f"index {family}")
    finally:
        store.flush()
        store.close()
    rejected_file = write_rejections(side_dir(db), family, rejects, paths)
    return {
        "family": family, "profile": profile, "library": root, "db": db, "collection": collection,
        "backend": store.backend, "dim": dim, "model_id": model_id,
        "reduced_basis": reduced.source if reduced else None,
        "vector_file": str(store.vectors_file) if isinstance(store, LocalStore) else None,
        "files": len(files), "skipped": skipped, "embedded": added, "rejected": len(rejects),
        "rejected_file": rejected_file,
    }


def _embed_into(store, embedder: AudioEmbedder, todo: list[ClipRef], reduced: ReducedBasis | None, root: str,
                taken: set[str], rejects: Rejections, desc: str) -> int:
    """Embed ``todo`` in groups of about ``batch_windows`` windows and add each group to ``store``
    as soon as it is done (an interrupted run keeps what it finished). Returns the rows added."""
    cfg = embedder.cfg
    added = 0
    for done in embed_batches(embedder, todo, rejects, cfg.batch_windows, cfg.decode_workers, desc=desc, unit="file"):
        if not done:
            continue
        vectors = np.stack([vec.numpy() for _, vec in done]).astype(np.float32)
        if reduced:
            vectors = reduced.project(vectors)
        store.add([Entry(unique_name(track_name(root, ref.clip_id), taken), ref.uri, v)
                   for (ref, _), v in zip(done, vectors)])
        added += len(done)
    return added
