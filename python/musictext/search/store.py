"""Where a library's vectors live: a Milvus collection with Navidrome's schema, or, for a space
too wide for Milvus, an exact-search vector file.

Database (``db``): a local file path ending in ``.db`` is **Milvus Lite** (embedded, what
Navidrome itself ran); ``http://host:19530`` (or https/tcp/grpc/unix) is a Milvus server, reached
through the same ``pymilvus.MilvusClient`` (``$MILVUS_TOKEN`` is passed as its token). Default:
``$MUSICTEXT_LIBRARY_DB``, else ``$XDG_DATA_HOME/musictext/library.db``
(``~/.local/share/musictext/library.db``): one per user, so ``search`` finds it with no option and
a library folder is never written into.

Collections (Navidrome's names): ``embedding`` (muq), ``mert_embedding``, ``latent_embedding``
(any other family: ``{export name}_embedding``). Fields as Navidrome's sidecar creates them:
``name`` VARCHAR(512) primary key, ``embedding`` FLOAT_VECTOR(dim), ``offset`` FLOAT,
``model_id`` VARCHAR(256); **our addition**: ``path`` VARCHAR(4096), the file's absolute path or
URI, so results can be shown and a re-run skips files already indexed. Navidrome's queries name
only its own fields, so the extra one does not disturb it. Indexes as Navidrome builds them:
INVERTED on ``name``; COSINE on ``embedding`` with HNSW (M=50, efConstruction=250) on a server and
IVF_FLAT (nlist=1024) on Lite, which has no HNSW.

Side files (``side_dir(db)``: the db file's folder; for a server, a folder per server under the
data dir): ``rejected.jsonl`` (files that could not be indexed, per family) and the exact-search
fallback ``{collection}.f16.npy`` (float16 ``[N, dim]``) + ``{collection}.names.json`` (its rows:
name, path, offset; plus model_id and dim).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musictext.audio.families import family as family_spec

log = logging.getLogger(__name__)

DB_ENV = "MUSICTEXT_LIBRARY_DB"
TOKEN_ENV = "MILVUS_TOKEN"
MILVUS_MAX_DIM = 32768  # Milvus's documented FLOAT_VECTOR limit
NAME_MAX_BYTES = 512
MODEL_ID_MAX_BYTES = 256
PATH_MAX_BYTES = 4096
LITE_INDEX = {"index_type": "IVF_FLAT", "params": {"nlist": 1024}}
SERVER_INDEX = {"index_type": "HNSW", "params": {"M": 50, "efConstruction": 250}}
# A personal library is small: probing every IVF list keeps a Lite search exact at little cost.
LITE_SEARCH = {"nprobe": LITE_INDEX["params"]["nlist"]}
HNSW_MIN_EF = 128
MILVUS_MAX_TOPK = 16384
SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix://")
# Navidrome's collection names; other families get f"{export name}_embedding".
NAVIDROME_COLLECTIONS = {"muq": "embedding"}


def collection_name(family: str) -> str:
    name = family_spec(family).export_name
    return NAVIDROME_COLLECTIONS.get(family, f"{name}_embedding")


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "musictext"


def default_db() -> str:
    return os.environ.get(DB_ENV) or str(data_home() / "library.db")


def is_lite(db: str) -> bool:
    """A local file path (or file:// URI) is Milvus Lite; a scheme URI is a Milvus server."""
    return not db.startswith(SERVER_SCHEMES)


def lite_path(db: str) -> str:
    path = os.path.abspath(os.path.expanduser(db.removeprefix("file://")))
    if "://" in db and not db.startswith("file://"):
        raise ValueError(f"{db}: not a Milvus server URI ({', '.join(SERVER_SCHEMES)}) nor a local .db file")
    if not path.endswith(".db"):
        raise ValueError(f"{db}: a Milvus Lite database is a file whose name ends in .db")
    return path


def side_dir(db: str) -> Path:
    """Where rejected.jsonl and fallback vector files of ``db`` live."""
    if is_lite(db):
        return Path(lite_path(db)).parent
    host = re.sub(r"[^A-Za-z0-9._-]+", "_", db.split("://", 1)[1]).strip("_")
    return data_home() / "servers" / host


def connect(db: str):
    """A MilvusClient on ``db`` (creating the Lite file's folder). Close it with ``disconnect``."""
    from pymilvus import MilvusClient

    if is_lite(db):
        path = lite_path(db)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return MilvusClient(uri=path)
    return MilvusClient(uri=db, token=os.environ.get(TOKEN_ENV, ""))


def disconnect(client, db: str) -> None:
    """Close ``client``; for Lite also stop the in-process server pymilvus started for the file,
    which otherwise holds it until this process exits and keeps other processes (a ``search``
    after an ``index`` in a long-lived process, a service) from opening it."""
    client.close()
    if is_lite(db):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(lite_path(db))


@contextlib.contextmanager
def milvus(db: str):
    """A client on ``db`` for the block (see connect/disconnect)."""
    client = connect(db)
    try:
        yield client
    finally:
        disconnect(client, db)


def quiet_milvus_logs() -> None:
    """Keep Milvus Lite's and faiss's start-up chatter (INFO) out of a CLI's log."""
    for name in ("milvus_lite", "faiss.loader"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


def fit_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (Milvus VARCHAR lengths count bytes)."""
    return text.encode()[:limit].decode(errors="ignore")


@dataclass
class Entry:
    name: str
    path: str
    vector: np.ndarray  # [dim] float32
    offset: float = 0.0


@dataclass
class Match:
    name: str
    path: str
    score: float  # cosine similarity


class MilvusStore:
    """One family's Navidrome collection."""

    backend = "milvus"

    def __init__(self, client, db: str, collection: str, dim: int, model_id: str):
        self.client, self.db, self.collection, self.dim, self.model_id = client, db, collection, dim, model_id
        self.lite = is_lite(db)

    @classmethod
    def create_or_open(cls, db: str, collection: str, dim: int, model_id: str) -> MilvusStore:
        client = connect(db)
        store = cls(client, db, collection, dim, model_id)
        try:
            if not client.has_collection(collection):
                store._create()
                return store
            client.load_collection(collection)  # Lite forgets the loaded state when it stops
            held_dim, held_id = store._held()
            if held_dim != dim or (held_id is not None and held_id != model_id):
                raise ValueError(f"{db}: collection {collection!r} holds {held_dim}-D vectors of model_id "
                                 f"{held_id!r}; this run computes {dim}-D vectors of {model_id!r}. Use another "
                                 f"--db or drop the collection: one space per collection")
        except BaseException:
            disconnect(client, db)
            raise
        return store

    @classmethod
    def open(cls, db: str, collection: str) -> MilvusStore | None:
        """The collection if ``db`` has it, else None."""
        client = connect(db)
        store = cls(client, db, collection, 0, "")
        try:
            if not client.has_collection(collection):
                disconnect(client, db)
                return None
            client.load_collection(collection)  # Lite forgets the loaded state when it stops
            store.dim, held_id = store._held()
        except BaseException:
            disconnect(client, db)
            raise
        store.model_id = held_id or ""
        return store

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=NAME_MAX_BYTES)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("offset", DataType.FLOAT)
        schema.add_field("model_id", DataType.VARCHAR, max_length=MODEL_ID_MAX_BYTES)
        schema.add_field("path", DataType.VARCHAR, max_length=PATH_MAX_BYTES)  # ours, not Navidrome's
        index = self.client.prepare_index_params()
        index.add_index(field_name="name", index_type="INVERTED")
        vector_index = LITE_INDEX if self.lite else SERVER_INDEX
        index.add_index(field_name="embedding", metric_type="COSINE", **vector_index)
        self.client.create_collection(self.collection, schema=schema)
        # Waiting for the build asks the server for a timestamp, which Lite does not implement
        # (it logs a traceback); Lite builds in the background and load_collection waits anyway.
        self.client.create_index(self.collection, index, sync=not self.lite)
        self.client.load_collection(self.collection)
        log.info("created collection %s (%d-D, %s, cosine)", self.collection, self.dim, vector_index["index_type"])

    def _held(self) -> tuple[int, str | None]:
        """(dim, model_id of a stored row or None when empty) of the existing collection."""
        fields = self.client.describe_collection(self.collection)["fields"]
        dims = [int(f["params"]["dim"]) for f in fields if f["name"] == "embedding"]
        names = {f["name"] for f in fields}
        if not dims or not {"name", "model_id", "path"} <= names:
            raise ValueError(f"collection {self.collection!r} lacks the fields name/embedding/model_id/path: "
                             f"not written by musictext index ({sorted(names)})")
        rows = self.client.query(self.collection, filter="", output_fields=["model_id"], limit=1)
        return dims[0], (rows[0]["model_id"] if rows else None)

    def indexed(self) -> dict[str, str]:
        """{path: name} of every stored row."""
        # Lite returns no session timestamp; pymilvus warns about it on every iterator.
        iter_log = logging.getLogger("pymilvus.client.iterator.query_iterator")
        level = iter_log.level
        if self.lite:
            iter_log.setLevel(logging.ERROR)
        out: dict[str, str] = {}
        try:
            it = self.client.query_iterator(self.collection, batch_size=1000, filter="",
                                            output_fields=["name", "path"])
            while batch := it.next():
                out.update((r["path"], r["name"]) for r in batch)
            it.close()
        finally:
            iter_log.setLevel(level)
        return out

    def add(self, entries: list[Entry]) -> None:
        if entries:
            self.client.insert(self.collection, [
                {"name": e.name, "embedding": e.vector.astype(np.float32).tolist(), "offset": float(e.offset),
                 "model_id": self.model_id, "path": e.path} for e in entries])

    def flush(self) -> None:
        self.client.flush(self.collection)

    def search(self, query: np.ndarray, limit: int) -> list[Match]:
        limit = min(limit, MILVUS_MAX_TOPK)
        params = LITE_SEARCH if self.lite else {"ef": max(limit, HNSW_MIN_EF)}
        hits = self.client.search(self.collection, data=[np.asarray(query, np.float32).tolist()], limit=limit,
                                  output_fields=["name", "path"], anns_field="embedding",
                                  search_params={"metric_type": "COSINE", "params": params})[0]
        return [Match(h["entity"]["name"], h["entity"]["path"], float(h["distance"])) for h in hits]

    def close(self) -> None:
        disconnect(self.client, self.db)


class LocalStore:
    """Exact cosine search over a float16 vector file: the fallback for a space wider than
    Milvus allows. New rows are kept in memory and written (whole file, atomically) on flush."""

    backend = "local"
    # Rows added between two writes of the whole file while indexing.
    FLUSH_EVERY = 256

    def __init__(self, directory: Path, collection: str, dim: int, model_id: str):
        self.vectors_file = directory / f"{collection}.f16.npy"
        self.names_file = directory / f"{collection}.names.json"
        self.collection, self.dim, self.model_id = collection, dim, model_id
        self.rows: list[dict] = []
        self._held = np.zeros((0, dim), np.float16)
        self._new: list[np.ndarray] = []

    @classmethod
    def exists(cls, directory: Path, collection: str) -> bool:
        return (directory / f"{collection}.names.json").exists()

    @classmethod
    def create_or_open(cls, directory: Path, collection: str, dim: int, model_id: str) -> LocalStore:
        if not cls.exists(directory, collection):
            return cls(directory, collection, dim, model_id)
        store = cls.open(directory, collection)
        if store.dim != dim or store.model_id != model_id:
            raise ValueError(f"{store.names_file} holds {store.dim}-D vectors of {store.model_id!r}; this run "
                             f"computes {dim}-D vectors of {model_id!r}. Use another --db or delete the file "
                             f"and {store.vectors_file.name}")
        return store

    @classmethod
    def open(cls, directory: Path, collection: str) -> LocalStore:
        names_file = directory / f"{collection}.names.json"
        meta = json.loads(names_file.read_text())
        store = cls(directory, collection, int(meta["dim"]), meta["model_id"])
        store.rows = meta["rows"]
        vectors = np.load(store.vectors_file, mmap_mode="r") if store.rows else store._held
        # Vectors are written before the names: extra rows come from an interrupted write.
        if vectors.shape[0] < len(store.rows) or vectors.shape[1:] != (store.dim,):
            raise ValueError(f"{store.vectors_file}: {vectors.shape} does not hold the {len(store.rows)} "
                             f"{store.dim}-D rows {names_file.name} lists; re-index this family")
        store._held = vectors[: len(store.rows)]
        return store

    def indexed(self) -> dict[str, str]:
        return {r["path"]: r["name"] for r in self.rows}

    def add(self, entries: list[Entry]) -> None:
        for e in entries:
            self.rows.append({"name": e.name, "path": e.path, "offset": float(e.offset)})
            self._new.append(e.vector.astype(np.float16))
        if len(self._new) >= self.FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self._new:
            return
        self.vectors_file.parent.mkdir(parents=True, exist_ok=True)
        vectors = np.concatenate([np.asarray(self._held), np.stack(self._new)])
        tmp = self.vectors_file.with_name(self.vectors_file.name + ".tmp.npy")
        np.save(tmp, vectors)
        os.replace(tmp, self.vectors_file)
        meta = {"collection": self.collection, "model_id": self.model_id, "dim": self.dim, "rows": self.rows}
        tmp_names = self.names_file.with_suffix(".json.tmp")
        tmp_names.write_text(json.dumps(meta, ensure_ascii=False))
        os.replace(tmp_names, self.names_file)
        self._held, self._new = np.load(self.vectors_file, mmap_mode="r"), []

    def search(self, query: np.ndarray, limit: int, chunk: int = 4096) -> list[Match]:
        if self._new:
            raise RuntimeError("LocalStore.search with unflushed rows")
        q = np.asarray(query, np.float32)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        scores = np.empty(len(self.rows), np.float32)
        for start in range(0, len(self.rows), chunk):
            v = np.asarray(self._held[start : start + chunk], np.float32)
            scores[start : start + len(v)] = (v @ q) / np.maximum(np.linalg.norm(v, axis=1), 1e-12)
        order = np.argsort(-scores, kind="stable")[:limit]
        return [Match(self.rows[i]["name"], self.rows[i]["path"], float(scores[i])) for i in order]

    def close(self) -> None:
        self.flush()


def open_for_search(db: str, family: str) -> MilvusStore | LocalStore:
    """The family's index in ``db``: its Milvus collection, else its fallback vector file."""
    collection = collection_name(family)
    store = MilvusStore.open(db, collection)
    if store is not None:
        return store
    directory = side_dir(db)
    if LocalStore.exists(directory, collection):
        return LocalStore.open(directory, collection)
    raise LookupError(f"{db} has no {family} index (collection {collection!r}, nor {collection}.names.json in "
                      f"{directory}); run `musictext index DIR --family {family} --db {db}` first")
