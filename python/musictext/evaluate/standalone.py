"""``musictext evaluate`` outside the pipeline: an exported text embedder against any records
file (``musictext datasets records``, or a run's test split), with the audio vectors computed
from the user's files through the family's upload path (``AudioEmbedder.embed_file``: what
Navidrome stores) or read from a targets file.

A record's vectors are matched by id: a vector whose id is the record's ``track_id``, or the
clip stage's ``<track_id>#<k>`` (several clips of a track are all relevant to its captions).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

from musictext import layout, storage
from musictext.evaluate.core import EvalOptions, EvalSet, evaluate_set, write_outputs
from musictext.exports import (
    EMBEDDER_SUFFIX,
    embedder_dir,
    export_name,
    family_of,
    find_exports,
    load_export,
)
from musictext.rejects import ItemError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".wma")
MAX_REJECTED_LISTED = 200  # metrics.json lists this many rejected items, and counts them all


@dataclass
class AudioVectors:
    """Vectors with their ids (a track id, or ``<track id>#<k>`` for a clip) and what made them."""

    ids: list[str]
    vectors: np.ndarray
    source: dict
    rejected: list[dict] = field(default_factory=list)


# -- inputs -------------------------------------------------------------------------------------
# Records are ``musictext.ingest.records.Record`` objects (read by the CLI layer: this stage does
# not import another stage's program), or anything with their fields: track_id, captions, tags,
# split, start_s, end_s and ``audio`` with its ``kind`` and locator fields.
Record = Any


def resolve_model(path: str, family: str | None = None) -> tuple[str, str | None]:
    """(the ``{name}_text_embedder`` location, its family or None): ``path`` is that directory
    itself, or a models directory holding exports (then ``family`` picks one when there are several)."""
    if storage.exists(storage.join(path, "config.json")):
        base = posixpath.basename(path.rstrip("/"))
        name = base[: -len(EMBEDDER_SUFFIX) - 1] if base.endswith("_" + EMBEDDER_SUFFIX) else None
        try:
            found = family_of(name) if name else None
        except ValueError:
            found = None
        return path, family or found
    exports = find_exports(path)
    if family:
        name = export_name(family_of(family))
        if name not in exports:
            raise FileNotFoundError(f"{path} holds no {embedder_dir(path, name)} (exports there: {sorted(exports) or 'none'})")
        return exports[name], family_of(family)
    if len(exports) != 1:
        raise ValueError(f"{path}: {'no exported text embedder' if not exports else f'several exports {sorted(exports)}'}; "
                         "give the {name}_text_embedder directory or --family")
    name, location = next(iter(exports.items()))
    return location, family_of(name)


def audio_candidates(record: Record, audio_dir: str | None) -> list[str]:
    """Where a record's audio file may be: a path record's file under ``audio_dir`` (else its
    own root); an archive member or URL's file name under ``audio_dir``; any record's
    ``<track_id>.<ext>`` under ``audio_dir``."""
    audio, out = record.audio, []
    kind = getattr(audio, "kind", None)
    if kind == "path":
        out.append(storage.join(audio_dir, audio.path) if audio_dir else storage.join(audio.root, audio.path))
    if audio_dir:
        if kind == "archive":
            out += [storage.join(audio_dir, audio.member), storage.join(audio_dir, posixpath.basename(audio.member))]
        if kind == "url":
            out.append(storage.join(audio_dir, posixpath.basename(urlparse(audio.url).path)))
        out += [storage.join(audio_dir, record.track_id + ext) for ext in AUDIO_EXTENSIONS]
    return list(dict.fromkeys(out))


def find_audio(record: Record, audio_dir: str | None) -> str:
    candidates = audio_candidates(record, audio_dir)
    for uri in candidates:
        if storage.exists(uri):
            return uri
    shown = ", ".join(candidates[:3]) + (", ..." if len(candidates) > 3 else "")
    kind = getattr(record.audio, "kind", "unknown")
    raise ItemError(record.track_id, f"no audio file ({kind} record; looked for {shown or 'nothing: give --audio'})")


def vectors_from_audio(records: Sequence[Record], audio_dir: str | None, family: str, profile: str = "production",
                       device: str | None = None) -> AudioVectors:
    """Each record's file through the family's upload path; missing or undecodable files are
    rejected (named, with the reason), the rest go on."""
    from musictext.audio import build_embedder
    from musictext.config import load_family_config
    from musictext.logs import progress

    cfg = load_family_config(family, profile)
    embedder = build_embedder(cfg.audio, device=device)
    ids, vecs, rejected = [], [], []
    for record in progress(records, desc=f"embed {family}", total=len(records), unit="file"):
        try:
            uri = find_audio(record, audio_dir)
            # embed_file(uri), with a bad file's error naming the record's track
            vecs.append(embedder.embed_loaded([embedder.load_file(uri, record.track_id)])[0].numpy())
            ids.append(record.track_id)
        except ItemError as err:
            rejected.append({"item": err.item, "reason": err.reason})
        except ValueError as err:  # a decodable file the model cannot take (e.g. too short)
            rejected.append({"item": record.track_id, "reason": str(err)})
    dim = embedder.target_dim
    source = {"kind": "audio files", "dir": audio_dir, "family": family, "profile": profile,
              "model": cfg.audio.model, "random_init": bool(cfg.audio.random_init)}
    return AudioVectors(ids, np.stack(vecs) if vecs else np.zeros((0, dim), np.float32), source, rejected)


def _read_ids(path: str) -> list[str]:
    text = storage.read_bytes(path).decode("utf-8")
    if path.endswith(".json"):
        ids = json.loads(text)
        if not isinstance(ids, list):
            raise ValueError(f"{path}: expected a JSON list of ids")
        return [str(i) for i in ids]
    return [line.strip() for line in text.splitlines() if line.strip()]


def vectors_from_targets(path: str, ids_path: str | None = None) -> AudioVectors:
    """A targets parquet (``clip_id`` + ``target``; a file, or a targets directory), or an .npy
    [N, dim] with ``ids_path`` (one id a line, or a JSON list)."""
    if path.endswith(".npy"):
        if not ids_path:
            raise ValueError(f"{path}: an .npy file needs --ids (one id a line, or a JSON list)")
        vectors = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
        ids = _read_ids(ids_path)
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise ValueError(f"{path}: {vectors.shape} array for {len(ids)} ids in {ids_path}; expected [{len(ids)}, dim]")
        return AudioVectors(ids, vectors.astype(np.float32), {"kind": "vectors file", "path": path, "ids": ids_path})
    import pyarrow as pa
    import pyarrow.compute as pc

    files = [path] if path.endswith(".parquet") else layout.target_files(path)
    tables = []
    for uri in files:
        if not storage.exists(uri):
            raise FileNotFoundError(f"targets {uri} does not exist (give a .parquet, a targets dir or an .npy)")
        table = storage.read_parquet(uri)
        missing = {"clip_id", "target"} - set(table.column_names)
        if missing:
            raise ValueError(f"{uri}: no {' or '.join(sorted(missing))} column (has {table.column_names})")
        tables.append(table.select(["clip_id", "target"]))
    table = pa.concat_tables(tables)
    ids = table["clip_id"].to_pylist()
    col = table["target"].combine_chunks()
    if not pa.types.is_fixed_size_list(col.type) and not pa.types.is_list(col.type):
        raise ValueError(f"{path}: the target column is {col.type}, not a list of floats")
    if pa.types.is_list(col.type) and len(set(pc.list_value_length(col).to_pylist())) > 1:
        raise ValueError(f"{path}: the targets are not all of one length")
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    vectors = values.reshape(len(ids), -1) if len(ids) else np.zeros((0, 0), np.float32)
    meta_uri = storage.join(path, layout.META) if not path.endswith(".parquet") else None
    meta = storage.read_json(meta_uri) if meta_uri and storage.exists(meta_uri) else {}
    facts = {k: meta[k] for k in ("family", "model", "random_init", "target_dim") if k in meta}
    return AudioVectors(ids, vectors, {"kind": "targets", "path": path, **facts})


# -- matching and evaluating --------------------------------------------------------------------
def match(records: Sequence[Record], audio: AudioVectors, embed_texts) -> tuple[EvalSet, list[dict]]:
    """The evaluation set of the records that have at least one vector; the others rejected."""
    by_track: dict[str, list[int]] = {}
    for row, vid in enumerate(audio.ids):  # track ids hold no "#": "<id>#<k>" is a clip of <id>
        by_track.setdefault(vid.rsplit("#", 1)[0], []).append(row)
    kept, rejected = [], []
    already = {r["item"] for r in audio.rejected}
    for record in records:
        if record.track_id in by_track:
            kept.append(record)
        elif record.track_id not in already:
            rejected.append({"item": record.track_id, "reason": "no audio vector with this id (or <id>#<k>)"})
    if len(kept) < 2:
        raise ValueError(f"{len(kept)} of {len(records)} records have an audio vector: at least 2 are needed "
                         f"(vector ids look like {audio.ids[:3]}; record ids like {[r.track_id for r in records[:3]]})")
    rows, audio_track, captions, text_track = [], [], [], []
    for t, record in enumerate(kept):
        for row in by_track[record.track_id]:
            rows.append(row)
            audio_track.append(t)
        for caption in dict.fromkeys(record.captions):
            captions.append(caption)
            text_track.append(t)
    data = EvalSet(
        text=np.asarray(embed_texts(captions)), text_track=np.array(text_track),
        audio=audio.vectors[rows], audio_track=np.array(audio_track), audio_ids=[audio.ids[r] for r in rows],
        track_ids=[r.track_id for r in kept], captions=captions, tags=[list(r.tags) for r in kept],
    )
    return data, rejected


def evaluate_records(
    model_path: str,
    records: Sequence[Record],
    out_dir: str,
    *,
    records_name: str = "records",
    audio_dir: str | None = None,
    targets: str | None = None,
    ids: str | None = None,
    family: str | None = None,
    profile: str = "production",
    split: str = "test",
    device: str | None = None,
    options: EvalOptions | None = None,
) -> dict:
    """Evaluate the export at ``model_path`` on ``records`` (already filtered to ``split``,
    which is only reported); write metrics.json, report.html, summary.md and the plots to
    ``out_dir``; return the metrics."""
    if audio_dir is not None and targets is not None:
        raise ValueError("give --audio DIR or --targets FILE, not both")
    location, model_family = resolve_model(model_path, family)
    model = load_export(location)
    if device:
        model.to(device)
    if targets is not None:
        audio = vectors_from_targets(targets, ids)
    else:
        if not model_family:
            raise ValueError(f"{location}: cannot tell the audio family from the model's name; give --family")
        audio = vectors_from_audio(records, audio_dir, model_family, profile, device)
    if audio.vectors.shape[0] and audio.vectors.shape[1] != model.target_dim:
        raise ValueError(f"the model {location} gives {model.target_dim}-D vectors but the audio vectors are "
                         f"{audio.vectors.shape[1]}-D: a different family or profile?")
    data, unmatched = match(records, audio, model.embed_texts)
    rejected = audio.rejected + unmatched
    options = options or EvalOptions()
    notes = list(options.extra.get("notes", []))
    if targets is None and any(r.start_s is not None or r.end_s is not None for r in records):
        notes.append("some records name a span of their file; the whole file was embedded, as Navidrome does")
    name = model_family or "model"
    facts = {"family": model_family, "model": location, "records": records_name, "split": split,
             "n_records": len(records), "audio": audio.source, "rejected_count": len(rejected),
             "rejected": rejected[:MAX_REJECTED_LISTED], "notes": notes}
    options = dataclasses.replace(options, extra={**options.extra, **facts})
    title = f"{name}: {os.path.basename(records_name)} ({split})"
    metrics, plots = evaluate_set(data, model.embed_texts, options, title=title)
    return write_outputs(out_dir, metrics, plots, title)
