"""A real HTTP server on 127.0.0.1 serving a directory, with Range requests (206) and faults on
demand: cut a file off mid-body (the server drops the connection), answer 503 a few times,
or ignore Range. Every request is logged (path, Range header, status)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import BaseRequestHandler


@dataclass
class Faults:
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before dropping (once)
    unavailable: dict[str, int] = field(default_factory=dict)  # path -> 503 answers before serving
    ignore_range: bool = False
    log: list[tuple[str, str | None, int]] = field(default_factory=list)


def _handler(root: Path, faults: Faults):
    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802 -- http.server's naming
            path = self.path.split("?", 1)[0]
            rng = self.headers.get("Range")
            if faults.unavailable.get(path, 0) > 0:
                faults.unavailable[path] -= 1
                faults.log.append((path, rng, 503))
                self.send_error(503)
                return
            file = Path(self.translate_path(path))
            if not file.is_file():
                faults.log.append((path, rng, 404))
                self.send_error(404)
                return
            data = file.read_bytes()
            start = 0
            status = 200
            if rng and rng.startswith("bytes=") and not faults.ignore_range:
                start = int(rng[6:].split("-", 1)[0] or 0)
                if start >= len(data):
                    faults.log.append((path, rng, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            faults.log.append((path, rng, status))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            cut = faults.cut_after.pop(path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            self.wfile.write(body)

    return Handler



def send_json(handler: BaseRequestHandler, status: int, body) -> None:
    """Answer a request with ``body`` as JSON."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)

@contextlib.contextmanager
def serve_handler(handler: Callable[..., BaseRequestHandler]) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    """Run ``handler`` (a request handler class, or a factory of one) on 127.0.0.1:<free port>
    in a thread; yields (base URL, server) and stops the server on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def serve(root: str | os.PathLike, faults: Faults | None = None):
    """Serve ``root`` at http://127.0.0.1:<free port>; yields (base URL, faults)."""
    faults = faults or Faults()
    with serve_handler(_handler(Path(root), faults)) as (base, _):
        yield base, faults


def stop_process(proc, timeout: float = 15.0) -> None:
    """Terminate a server process; kill it if it does not exit within ``timeout``."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
