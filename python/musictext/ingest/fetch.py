"""Where a source's files come from: its published metadata, and each record's audio.

``metadata_dir`` gives the directory the parser reads (the user's own copy, or the published
files fetched into the cache). ``fetch_audio`` brings one record's audio into a shard directory
for every ``Record.audio`` kind, and says which span of the written file is the record's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from musictext import storage
from musictext.ingest.archives import fetch_archive, read_member
from musictext.ingest.base import Source, SourceOptions
from musictext.ingest.http import Client
from musictext.ingest.records import ArchiveAudio, PathAudio, Record, UrlAudio, YouTubeAudio
from musictext.manifest import confined
from musictext.rejects import ItemError

log = logging.getLogger(__name__)

CACHE_ENV = "MUSICTEXT_CACHE"


@dataclass(frozen=True)
class Fetched:
    """A record's audio in the shard: its path (relative to the shard dir) and the record's span
    in that file (None: the whole file)."""

    path: str
    start_s: float | None
    end_s: float | None


def cache_root(opts: SourceOptions) -> Path:
    """The local cache of fetched metadata and archives (``cache_dir``, $MUSICTEXT_CACHE,
    ~/.cache/musictext)."""
    root = opts.cache_dir or os.environ.get(CACHE_ENV) or os.path.join(Path.home(), ".cache", "musictext")
    path = Path(storage.local_path(root))
    path.mkdir(parents=True, exist_ok=True)
    return path


_CLIENTS: dict[str, Client] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(opts: SourceOptions) -> Client:
    """One HTTP client per source configuration in this process, so its rate limit holds across
    every item and fetch thread of a shard (a client per item would limit nothing)."""
    key = f"{type(opts).__qualname__}:{opts.model_dump_json()}"
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = Client.for_options(opts)
        return _CLIENTS[key]


def published_url(opts: SourceOptions, name: str, url: str) -> str:
    return f"{opts.base_url.rstrip('/')}/{name}" if opts.base_url else url


def metadata_dir(source: Source, opts: SourceOptions) -> str:
    """The user's metadata directory, or the source's published files fetched into the cache."""
    if opts.metadata:
        if not storage.exists(opts.metadata):
            raise FileNotFoundError(f"source {source.name!r}: metadata directory {opts.metadata} does not exist")
        return opts.metadata
    if not source.published:
        raise ValueError(f"source {source.name!r} publishes no metadata files: give its `metadata` option")
    target = cache_root(opts) / "metadata" / source.name
    client = Client.for_options(opts)
    for f in source.published:
        url = published_url(opts, f.name, f.url)
        try:
            client.download(url, target / f.name, item=f"{source.name}:{f.name}", sha256=f.sha256, sha1=f.sha1)
        except ItemError as err:
            if f.required:
                raise FileNotFoundError(f"source {source.name!r}: cannot fetch {f.name}: {err.reason}") from None
            log.info("%s: optional %s not fetched (%s)", source.name, f.name, err.reason)
    return str(target)


def _ext(name: str, default: str = ".audio") -> str:
    ext = posixpath.splitext(urlsplit(name).path)[1].lower()
    return ext if ext and len(ext) <= 6 else default


def audio_rel(track_id: str, ext: str) -> str:
    return f"audio/{track_id}{ext}"


def _store(out_dir: str, rel: str, data: bytes) -> str:
    storage.write_bytes(storage.join(out_dir, rel), data)  # atomic: present means complete
    return rel


def _span(record: Record) -> tuple[float | None, float | None]:
    return record.start_s, record.end_s


def fetch_youtube(record: Record, ref: YouTubeAudio, out_dir: str, opts: SourceOptions) -> Fetched:
    from musictext.ingest.youtube import DEFAULT_URL, download_segment

    template = getattr(opts, "youtube_url", None) or DEFAULT_URL
    url = template.format(ytid=ref.ytid)
    # The source's request rate covers yt-dlp too: the same limiter as its HTTP requests.
    client_for(opts).limiter.wait()
    with tempfile.TemporaryDirectory(prefix="musictext-yt-") as tmp:
        path = download_segment(record.track_id, url, Path(tmp) / "audio", record.start_s, record.end_s,
                                retries=opts.retries)
        rel = _store(out_dir, audio_rel(record.track_id, path.suffix.lower()), path.read_bytes())
    return youtube_fetched(record, rel)


def youtube_fetched(record: Record, rel: str) -> Fetched:
    """yt-dlp fetched only the record's segment: the file's span starts at 0."""
    if record.start_s is not None and record.end_s is not None:
        return Fetched(rel, 0.0, record.end_s - record.start_s)
    return Fetched(rel, *_span(record))


def fetch_url(record: Record, ref: UrlAudio, out_dir: str, opts: SourceOptions) -> Fetched:
    # Into the cache first: an interrupted download resumes from its .part on the next attempt,
    # whichever output directory that attempt writes.
    key = hashlib.sha1(ref.url.encode()).hexdigest()[:16]
    cached = cache_root(opts) / "files" / f"{key}{_ext(ref.url)}"
    client_for(opts).download(ref.url, cached, item=record.track_id, size=ref.size, sha256=ref.sha256,
                                      sha1=ref.sha1)
    rel = _store(out_dir, audio_rel(record.track_id, _ext(ref.url)), cached.read_bytes())
    cached.unlink(missing_ok=True)
    return Fetched(rel, *_span(record))


def fetch_member(record: Record, ref: ArchiveAudio, out_dir: str, opts: SourceOptions) -> Fetched:
    archive = fetch_archive(ref, cache_root(opts), client_for(opts), record.track_id)
    data = read_member(archive, ref.format, ref.member, record.track_id)
    for algorithm, expected in (("sha256", ref.member_sha256), ("sha1", ref.member_sha1)):
        got = hashlib.new(algorithm, data).hexdigest() if expected else None
        if expected and got != expected.lower():
            raise ItemError(record.track_id, f"{algorithm} mismatch for {ref.member}: {got}, published {expected}")
    rel = _store(out_dir, audio_rel(record.track_id, _ext(ref.member)), data)
    return Fetched(rel, *_span(record))


def fetch_path(record: Record, ref: PathAudio, out_dir: str) -> Fetched:
    src = confined(ref.root, ref.path, record.track_id)
    if not storage.exists(src):
        raise ItemError(record.track_id, f"audio file {src} not found")
    rel = _store(out_dir, audio_rel(record.track_id, _ext(ref.path)), storage.read_bytes(src))
    return Fetched(rel, *_span(record))


def fetch_audio(record: Record, out_dir: str, opts: SourceOptions) -> Fetched:
    """The record's audio written into ``out_dir`` (ItemError for a bad item)."""
    ref = record.audio
    if isinstance(ref, YouTubeAudio):
        return fetch_youtube(record, ref, out_dir, opts)
    if isinstance(ref, UrlAudio):
        return fetch_url(record, ref, out_dir, opts)
    if isinstance(ref, ArchiveAudio):
        return fetch_member(record, ref, out_dir, opts)
    if isinstance(ref, PathAudio):
        return fetch_path(record, ref, out_dir)
    raise ValueError(f"{record.track_id}: audio kind {ref.kind!r} has no fetcher; its source must fetch it")
