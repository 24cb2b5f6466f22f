"""Local paths and bucket URIs (gs://, s3://, memory://) through one fsspec code path."""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs


def fs_for(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and in-filesystem path (no protocol prefix, as pyarrow wants it)."""
    return url_to_fs(uri)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI, keeping the protocol."""
    if "://" in uri:
        proto, rest = uri.split("://", 1)
        return f"{proto}://{posixpath.join(rest, *parts)}"
    return posixpath.join(uri, *parts)


def exists(uri: str) -> bool:
    fs, path = fs_for(uri)
    return fs.exists(path)


def makedirs(uri: str) -> None:
    fs, path = fs_for(uri)
    fs.makedirs(path, exist_ok=True)


def is_local(uri: str) -> bool:
    """A plain path or a file:// URI (anything else is a bucket or another remote)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The filesystem path of a local ``uri`` (file:// prefix dropped); remote URIs unchanged."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


@contextlib.contextmanager
def atomic_target(uri: str) -> Iterator[tuple[fsspec.AbstractFileSystem, str]]:
    """Yield (fs, temporary sibling path) to write; on success it is moved onto ``uri``.

    A killed or failing writer never leaves a partial file where readers (or an idempotent
    re-run) would take it as done; the temporary file is removed on failure.
    """
    fs, path = fs_for(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield fs, tmp
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def _atomic(uri: str, write) -> None:
    with atomic_target(uri) as (fs, tmp):
        write(fs, tmp)


def write_bytes(uri: str, data: bytes) -> None:
    def _write(fs, tmp):
        with fs.open(tmp, "wb") as fh:
            fh.write(data)

    _atomic(uri, _write)


def read_bytes(uri: str) -> bytes:
    fs, path = fs_for(uri)
    with fs.open(path, "rb") as fh:
        return fh.read()


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_jsonl(uri: str, rows: Iterable[dict]) -> None:
    write_bytes(uri, "".join(json.dumps(r, default=str) + "\n" for r in rows).encode())


def read_jsonl(uri: str) -> Iterator[dict]:
    for line_no, line in enumerate(read_bytes(uri).decode().splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{uri}:{line_no}: not valid JSON ({err.msg})") from err


def write_parquet(uri: str, table: pa.Table) -> None:
    write_parquet_batches(uri, table.schema, [table])


def write_parquet_batches(uri: str, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    """Write ``tables`` (each of ``schema``) one after another as one Parquet file, atomically.
    Memory is one table's, whatever the file's size. An exception from ``tables`` leaves no file
    behind."""
    # Dictionary-encode only the string columns: on float vectors (all distinct values) it costs
    # time for nothing -- a 54 MB float16 4,096-D targets file wrote in 6.0 s instead of 2.5 s
    # and read in 3.7 s instead of 0.8 s.
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]

    def _write(fs, tmp):
        with fs.open(tmp, "wb") as fh, pq.ParquetWriter(fh, schema, use_dictionary=strings) as writer:
            for table in tables:
                writer.write_table(table)

    _atomic(uri, _write)


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = fs_for(uri)
    return pq.read_table(path, filesystem=fs, columns=columns)
