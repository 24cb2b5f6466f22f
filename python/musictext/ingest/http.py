"""HTTP for ingest: resumable downloads (Range requests), checksums, retries, rate limits.

Every request goes through ``Client``: one ``requests.Session`` per source, a minimum interval
between requests (``requests_per_second``), and tenacity retries with exponential backoff for
what is transient (connection errors, timeouts, a body cut short, HTTP 429 and 5xx). Anything
else (404, 403, a checksum mismatch) is the item's fault: ``ItemError``, recorded and skipped.

A download writes ``<dest>.part`` and renames it when complete and verified, so a file at its
final path is always whole; an interrupted download resumes from the ``.part`` file's size
with ``Range: bytes=N-`` (a server that ignores the range answers 200 and the file restarts).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import requests
from tenacity import (
    before_sleep_log,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from musictext.logs import progress
from musictext.rejects import ItemError

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # small enough that a cut-off body leaves a resumable .part
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
USER_AGENT = "musictext-ingest (+https://github.com/musictext/musictext)"


class TransientError(Exception):
    """A failure worth retrying (the server or the network, not the item)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class HTTPStatusError(ItemError):
    """A final non-2xx answer; ``status`` is its code."""

    def __init__(self, item: str, status: int, url: str, detail: str = ""):
        super().__init__(item, f"HTTP {status} for {url}" + (f": {detail}" if detail else ""))
        self.status = status


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "").strip()
    return min(float(value), 120.0) if value.isdigit() else None


class _WaitRetryAfter:
    """tenacity wait: a server's Retry-After when it sent one, else exponential backoff."""

    def __init__(self, backoff):
        self.backoff = backoff

    def __call__(self, state) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        return hinted if hinted is not None else self.backoff(state)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, (TransientError, requests.ConnectionError, requests.Timeout,
                            requests.exceptions.ChunkedEncodingError))


class RateLimiter:
    """At most ``per_second`` request starts per second, across threads."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            time.sleep(delay)


class Client:
    """HTTP GETs with a rate limit and retries; ``retries`` extra attempts after the first."""

    def __init__(self, requests_per_second: float = 4.0, retries: int = 5, timeout_s: float = 60.0,
                 backoff_s: float = 1.0, headers: dict[str, str] | None = None):
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers.update(headers or {})
        self.limiter = RateLimiter(requests_per_second)
        self.timeout_s = timeout_s
        self._retrying = retry(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(retries + 1),
            wait=_WaitRetryAfter(wait_exponential(multiplier=backoff_s, max=60)),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )

    @classmethod
    def for_options(cls, opts, **kw) -> Client:
        """A client with a source's rate limit, retries and timeout (``SourceOptions``)."""
        return cls(opts.requests_per_second, opts.retries, opts.timeout_s, **kw)

    def _request(self, method: str, url: str, **kw) -> requests.Response:
        self.limiter.wait()
        resp = self.session.request(method, url, timeout=self.timeout_s, **kw)
        if resp.status_code in TRANSIENT_STATUS:
            resp.close()
            raise TransientError(f"HTTP {resp.status_code} from {url}", _retry_after(resp))
        return resp

    def request(self, method: str, url: str, item: str | None = None, **kw) -> requests.Response:
        """A response with a 2xx status (retried while transient, honouring Retry-After);
        ``HTTPStatusError`` for another final status, ItemError when retries run out."""
        try:
            resp = self._retrying(self._request)(method, url, **kw)
        except (TransientError, requests.RequestException) as err:
            raise ItemError(item or url, f"{method} {url} failed after retries: {err}") from None
        if not resp.ok:
            detail = resp.text[:200] if method != "GET" else ""
            resp.close()
            raise HTTPStatusError(item or url, resp.status_code, url, detail)
        return resp

    def get(self, url: str, item: str | None = None, **kw) -> requests.Response:
        return self.request("GET", url, item, **kw)

    def post(self, url: str, item: str | None = None, **kw) -> requests.Response:
        return self.request("POST", url, item, **kw)

    def get_bytes(self, url: str, item: str | None = None) -> bytes:
        # Not streamed: requests reads the body inside the retried call, so a cut body retries.
        return self.get(url, item).content

    def download(self, url: str, dest: str | Path, item: str | None = None, size: int | None = None,
                 sha256: str | None = None, sha1: str | None = None, show_progress: bool = False) -> Path:
        """``url`` into ``dest`` (resuming a ``.part`` file), verified; the path.

        A ``dest`` that already exists is complete (it was renamed into place only after its
        checks) and is not fetched again.
        """
        dest = Path(dest)
        if dest.exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(dest):  # one writer per file: other threads and processes wait, then reuse it
            if dest.exists():
                return dest
            return self._download_locked(url, dest, item or url, size, sha256, sha1, show_progress)

    def _download_locked(self, url, dest: Path, item: str, size, sha256, sha1, show_progress) -> Path:
        part = dest.with_name(dest.name + ".part")
        self._retrying(self._download_once)(url, part, item, show_progress)
        try:
            verify_file(part, item, size=size, sha256=sha256, sha1=sha1)
        except ItemError:
            part.unlink(missing_ok=True)  # a wrong file is not resumed
            raise
        os.replace(part, dest)
        return dest

    def _download_once(self, url: str, part: Path, item: str, show_progress: bool) -> None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        self.limiter.wait()
        try:
            resp = self.session.get(url, headers=headers, stream=True, timeout=self.timeout_s)
        except requests.RequestException as err:
            raise TransientError(f"GET {url}: {err}") from err
        with resp:
            if resp.status_code == 416 and have:  # the .part already holds the whole file
                return
            if resp.status_code in TRANSIENT_STATUS:
                raise TransientError(f"HTTP {resp.status_code} from {url}", _retry_after(resp))
            if not resp.ok:
                raise HTTPStatusError(item, resp.status_code, url)
            resumed = resp.status_code == 206
            if have and not resumed:
                log.info("%s: server ignored the range request; downloading from the start", url)
            expected = _expected_total(resp, have if resumed else 0)
            mode = "ab" if resumed else "wb"
            written = have if resumed else 0
            chunks = resp.iter_content(CHUNK)
            if show_progress:
                chunks = progress(chunks, desc=f"download {part.name[:-5]}", total=None)
            try:
                with open(part, mode) as fh:
                    for chunk in chunks:
                        fh.write(chunk)
                        written += len(chunk)
            except (requests.RequestException, OSError) as err:
                raise TransientError(f"{url} cut off after {written} bytes: {err}") from err
            if expected is not None and written < expected:
                raise TransientError(f"{url} cut off: {written} of {expected} bytes")


@contextlib.contextmanager
def exclusive(path: Path):
    """An exclusive lock on ``<path>.lock`` (fcntl: held across threads and processes sharing a
    cache directory; released when the holder dies)."""
    with _THREAD_LOCK:
        lock = _PATH_LOCKS.setdefault(str(path), threading.Lock())
    with lock, open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_THREAD_LOCK = threading.Lock()
_PATH_LOCKS: dict[str, threading.Lock] = {}


def _expected_total(resp: requests.Response, offset: int) -> int | None:
    length = resp.headers.get("Content-Length")
    if length is None or resp.headers.get("Content-Encoding"):
        return None
    return offset + int(length)


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, item: str, size: int | None = None, sha256: str | None = None,
                sha1: str | None = None) -> None:
    """ItemError if ``path`` does not have the published size or checksums."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise ItemError(item, f"size mismatch for {path.name}: {actual} bytes, published {size}")
    for algorithm, expected in (("sha256", sha256), ("sha1", sha1)):
        if expected:
            got = file_digest(path, algorithm)
            if got.lower() != expected.lower():
                raise ItemError(item, f"{algorithm} mismatch for {path.name}: {got}, published {expected}")
