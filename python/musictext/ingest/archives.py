"""Published archives (tar, zip, zip split into parts): fetched once into a cache, verified,
then read member by member.

Archives are large (an MTG-Jamendo tar is ~1.5 GB, FMA's full zip 879 GiB): each is downloaded
once per machine into the cache directory (resuming with Range requests), checked against its
published size/checksum, and kept; every shard then reads only the members it needs (tar
headers are indexed once per process; zip has a central directory).
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path
from urllib.parse import urlsplit

from musictext.ingest.http import Client, exclusive, verify_file
from musictext.ingest.records import ArchiveAudio
from musictext.rejects import ItemError

log = logging.getLogger(__name__)

_OPEN: dict[Path, object] = {}
_LOCK = threading.Lock()
MAX_OPEN = 8


def archive_name(urls: tuple[str, ...]) -> str:
    """The cache file name of an archive (parts ``x.zip.001``… join into ``x.zip``)."""
    name = os.path.basename(urlsplit(urls[0]).path) or "archive"
    if len(urls) > 1 and name.rsplit(".", 1)[-1].isdigit():
        name = name.rsplit(".", 1)[0]
    return name


def fetch_archive(ref: ArchiveAudio, cache_dir: Path, client: Client, item: str) -> Path:
    """The archive in the cache, downloaded (and its parts joined) if absent, verified."""
    host = urlsplit(ref.urls[0]).netloc.replace(":", "_") or "local"
    dest = cache_dir / "archives" / host / archive_name(ref.urls)
    if dest.exists():
        return dest
    if len(ref.urls) == 1:  # Client.download locks the file itself
        return client.download(ref.urls[0], dest, item=item, size=ref.size, sha256=ref.sha256, sha1=ref.sha1,
                               show_progress=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(dest):
        if dest.exists():
            return dest
        return _join_parts(ref, dest, client, item)


def _join_parts(ref: ArchiveAudio, dest: Path, client: Client, item: str) -> Path:
    parts = [client.download(url, dest.with_name(os.path.basename(urlsplit(url).path)), item=item, show_progress=True)
             for url in ref.urls]
    joined = dest.with_name(dest.name + ".joining")
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    try:
        verify_file(joined, item, size=ref.size, sha256=ref.sha256, sha1=ref.sha1)
    except ItemError:
        joined.unlink(missing_ok=True)
        raise
    os.replace(joined, dest)
    for part in parts:  # the joined archive holds every byte of them
        part.unlink(missing_ok=True)
    return dest


def plain_tar(path: Path) -> Path:
    """A compressed tar decompressed once next to itself (``x.tar.gz`` -> ``x.tar``): members of
    a gzip stream can only be reached by decompressing from the start, so reading thousands of
    them out of order (MusicBench's 16.8 GB tar.gz) would decompress it thousands of times."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    opener = {b"\x1f\x8b": "gzip", b"BZ": "bz2", b"\xfd7": "lzma"}.get(magic[:2])
    if opener is None:
        return path
    plain = path.with_name(path.name.rsplit(".", 1)[0] if path.suffix in (".gz", ".bz2", ".xz") else path.name + ".tar")
    if plain == path:
        plain = path.with_name(path.name + ".plain.tar")
    with exclusive(plain):
        if not plain.exists():
            _decompress(path, plain, opener)
    return plain


def _decompress(path: Path, plain: Path, opener: str) -> None:
    import bz2
    import gzip
    import lzma

    tmp = plain.with_name(plain.name + ".tmp")
    module = {"gzip": gzip, "bz2": bz2, "lzma": lzma}[opener]
    log.info("decompressing %s once into %s", path.name, plain.name)
    with module.open(path, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, plain)


def _open(path: Path, fmt: str, item: str):
    with _LOCK:
        handle = _OPEN.get(path)
        if handle is None:
            if len(_OPEN) >= MAX_OPEN:
                _OPEN.pop(next(iter(_OPEN))).close()
            try:
                handle = tarfile.open(plain_tar(path), "r:") if fmt == "tar" else zipfile.ZipFile(path)
            except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
                raise ItemError(item, f"cannot open {fmt} archive {path.name}: {err}") from None
            if fmt == "tar":
                handle.getmembers()  # index every header once; later lookups are in memory
            _OPEN[path] = handle
        return handle


def read_member(path: Path, fmt: str, member: str, item: str) -> bytes:
    """One member's bytes; ItemError if it is absent, empty or cannot be read."""
    handle = _open(path, fmt, item)
    with _LOCK:
        try:
            if fmt == "tar":
                info = handle.getmember(member)
                fh = handle.extractfile(info)
                if fh is None:
                    raise ItemError(item, f"{member} in {path.name} is not a regular file")
                data = fh.read()
            else:
                data = handle.read(member)
        except KeyError:
            raise ItemError(item, f"{member} is not in {path.name}") from None
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
            raise ItemError(item, f"{member} in {path.name} is corrupt: {err}") from None
    if not data:
        raise ItemError(item, f"{member} in {path.name} is empty")
    return data


def close_all() -> None:
    with _LOCK:
        for handle in _OPEN.values():
            handle.close()
        _OPEN.clear()
