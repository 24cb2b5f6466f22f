"""The text service through a real uvicorn process on 127.0.0.1, and `embed-text`.

Two tiny exports (muq 48-D, latent 24-D; no mert) in a models dir, served by
``python -m musictext_kfp.serve_cli serve``; a second real HTTP server stands in for Navidrome's
sidecar behind ``--upstream``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import httpx
import numpy as np
import pytest
import torch
from musictext.config import TextConfig
from musictext.exports import load_export
from musictext.serve import MAX_TEXT_CHARS, load_models
from musictext.serve.batching import MicroBatcher
from musictext.text_encoder import TextEmbedder
from musictext_kfp.cli import main as cli_main
from tests.http_server import stop_process

ROOT = Path(__file__).resolve().parents[1]
DIMS = {"muq": 48, "latent": 24}
QUERIES = ["slow sad piano", "Upbeat ROCK with loud drums!", "a calm ambient drone for sleeping",
           "jazz trumpet solo", "<b>lo-fi</b> hip hop beats", "choir", "dark techno at 140 bpm",
           "acoustic guitar and soft female vocals in a quiet room"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_export(models_dir: Path, name: str, dim: int, base: str, seed: int) -> Path:
    torch.manual_seed(seed)
    model = TextEmbedder.from_base(TextConfig(base_model=base, hidden_dim=32), dim)
    out = models_dir / f"{name}_text_embedder"
    model.save_pretrained(out)
    return out


class Sidecar:
    """A real HTTP server on 127.0.0.1 that echoes what it received as JSON."""

    def __init__(self):
        self.requests: list[dict] = []
        sidecar = self

        class Echo(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _echo(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                seen = {"method": self.command, "path": self.path, "body": body,
                        "headers": {k.lower(): v for k, v in self.headers.items()}}
                sidecar.requests.append(seen)
                payload = json.dumps(seen).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Sidecar", "yes")
                self.send_header("Set-Cookie", "a=1")
                self.send_header("Set-Cookie", "b=2")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _echo

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Echo)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_base_model) -> Path:
    models_dir = tmp_path_factory.mktemp("checkpoints")
    for seed, (name, dim) in enumerate(DIMS.items()):
        write_export(models_dir, name, dim, tiny_base_model, seed)
    return models_dir


@pytest.fixture(scope="module")
def sidecar():
    side = Sidecar()
    yield side
    side.stop()


@pytest.fixture(scope="module")
def server(exports, sidecar):
    """Base URL of `serve_cli serve` running in its own process (micro-batching on)."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "musictext_kfp.serve_cli", "serve", "--models", str(exports),
           "--port", str(port), "--device", "cpu", "--upstream", sidecar.url,
           "--max-batch", "16", "--batch-wait-ms", "20"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server did not answer /health within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        stop_process(proc, 15)


@pytest.fixture(scope="module")
def loaded(exports):
    return {name: load_export(str(exports / f"{name}_text_embedder")) for name in DIMS}


def embed(base: str, text: str, model: str | None = "muq") -> httpx.Response:
    body = {"text": text} if model is None else {"text": text, "model": model}
    return httpx.post(f"{base}/embed_text", json=body, timeout=30)


@pytest.mark.parametrize("model", ["muq", "latent", None])
def test_embed_text_per_contract(server, loaded, model):
    reply = embed(server, QUERIES[0], model)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    name = model or "muq"  # Navidrome's default
    assert set(data) == {"embedding", "model", "dimension", "is_stub"}
    assert data["model"] == name and data["is_stub"] is False
    assert data["dimension"] == DIMS[name] == len(data["embedding"])
    want = loaded[name].embed_text(QUERIES[0])
    np.testing.assert_allclose(data["embedding"], want, atol=1e-5)
    assert abs(np.linalg.norm(data["embedding"]) - 1) < 1e-5


def test_spaces_differ_per_model(server):
    muq = embed(server, QUERIES[1], "muq").json()["embedding"]
    other = embed(server, QUERIES[2], "muq").json()["embedding"]
    assert not np.allclose(muq, other, atol=1e-3)  # a constant or stub vector would pass the test above


@pytest.mark.parametrize("body, where, says", [
    ({"text": "", "model": "muq"}, "text", "at least 1 character"),
    ({"text": "   \t\n ", "model": "muq"}, "text", "empty or only whitespace"),
    ({"text": "<br/>", "model": "muq"}, "text", "no words"),
    ({"text": "x" * (MAX_TEXT_CHARS + 1), "model": "muq"}, "text", f"at most {MAX_TEXT_CHARS} characters"),
    ({"text": "piano", "model": "clap"}, "model", "unknown model 'clap'"),
    ({"text": "piano", "model": ""}, "model", "unknown model ''"),
    ({"model": "muq"}, "text", "required"),
    ({"text": 3, "model": "muq"}, "text", "string"),
])
def test_bad_queries_are_422(server, body, where, says):
    reply = httpx.post(f"{server}/embed_text", json=body, timeout=30)
    assert reply.status_code == 422, reply.text
    errors = reply.json()["detail"]
    assert any(e["loc"][-1] == where and says in e["msg"] for e in errors), errors
    assert "embedding" not in reply.json()


def test_longest_accepted_query(server):
    reply = embed(server, "piano " * (MAX_TEXT_CHARS // 6))
    assert reply.status_code == 200 and reply.json()["dimension"] == DIMS["muq"]


def test_known_model_not_loaded_is_503(server):
    reply = embed(server, "slow sad piano", "mert")
    assert reply.status_code == 503
    assert "'mert' is not loaded" in reply.json()["detail"]


def test_models_and_health(server):
    models = {m["name"]: m for m in httpx.get(f"{server}/models").json()}
    assert set(models) == {"muq", "mert", "latent"}
    assert models["muq"] == {**models["muq"], "status": "available", "dimension": 48}
    assert models["latent"]["status"] == "available" and models["latent"]["dimension"] == 24
    assert models["mert"]["status"] == "unavailable" and models["mert"]["dimension"] == 76800
    assert "no mert_text_embedder export" in models["mert"]["description"]
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "healthy" and health["models"] == ["latent", "muq"]
    assert health["device"] == "cpu"


def test_concurrent_equals_sequential(server, loaded):
    queries = [(q, m) for q in QUERIES for m in ("muq", "latent")] * 3
    before = httpx.get(f"{server}/health").json()["batching"]["muq"]
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        replies = list(pool.map(lambda qm: embed(server, *qm), queries))
    after = httpx.get(f"{server}/health").json()["batching"]["muq"]
    assert all(r.status_code == 200 for r in replies)
    for (text, model), reply in zip(queries, replies):
        assert reply.json()["model"] == model
        np.testing.assert_allclose(reply.json()["embedding"], embed(server, text, model).json()["embedding"],
                                   atol=1e-5)
        np.testing.assert_allclose(reply.json()["embedding"], loaded[model].embed_text(text), atol=1e-5)
    # 24 muq queries in flight at once with a 20 ms window: fewer forward passes than queries.
    queries_run = after["queries"] - before["queries"]
    passes = after["batches"] - before["batches"]
    assert queries_run == 24 and passes < queries_run, after


def test_upstream_forwarding_then_502(server, sidecar):
    reply = httpx.put(f"{server}/api/v1/embed/audio?track=42&x=a%20b", content=b'{"k": [1, 2]}',
                      headers={"Content-Type": "application/json", "X-Token": "t0k", "Connection": "close"},
                      timeout=30)
    assert reply.status_code == 201, reply.text
    seen = reply.json()
    assert seen["method"] == "PUT" and seen["path"] == "/api/v1/embed/audio?track=42&x=a%20b"
    assert seen["body"] == '{"k": [1, 2]}'
    assert seen["headers"]["x-token"] == "t0k" and seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["host"] == f"127.0.0.1:{sidecar.port}"
    assert reply.headers["x-sidecar"] == "yes"
    assert reply.headers.get_list("set-cookie") == ["a=1", "b=2"]

    got = httpx.get(f"{server}/status", timeout=30).json()
    assert got["method"] == "GET" and got["path"] == "/status" and got["body"] == ""
    # Our own routes are answered here, never forwarded.
    n = len(sidecar.requests)
    assert embed(server, "piano", "mert").status_code == 503
    assert httpx.get(f"{server}/health").json()["status"] == "healthy"
    assert len(sidecar.requests) == n

    sidecar.stop()
    down = httpx.post(f"{server}/anything", json={}, timeout=30)
    assert down.status_code == 502
    assert sidecar.url in down.json()["detail"]


def test_embed_text_cli(exports, loaded, capsys):
    export = str(exports / "muq_text_embedder")
    assert cli_main(["embed-text", "--model", export, "--json", QUERIES[1]]) == 0
    vector = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(vector, loaded["muq"].embed_text(QUERIES[1]), atol=1e-6)

    assert cli_main(["embed-text", "--model", str(exports), "--name", "latent", "--json", QUERIES[1]]) == 0
    np.testing.assert_allclose(json.loads(capsys.readouterr().out), loaded["latent"].embed_text(QUERIES[1]),
                               atol=1e-6)

    assert cli_main(["embed-text", "--model", str(exports), QUERIES[1]]) == 0  # default: muq
    line = capsys.readouterr().out.strip()
    first = loaded["muq"].embed_text(QUERIES[1])[0]
    assert line.startswith("muq: 48-D, norm 1.000000, [") and f"{first:+.4f}" in line

    assert cli_main(["embed-text", "--model", str(exports), "--name", "mert", "piano"]) == 2
    assert "no mert_text_embedder export" in capsys.readouterr().err


def test_serve_refuses_a_dir_without_exports(tmp_path, capsys):
    assert cli_main(["serve", "--models", str(tmp_path)]) == 2
    assert "holds no exported text embedder" in capsys.readouterr().err


def test_batcher_groups_concurrent_queries_and_routes_rows():
    """In-process: 40 concurrent submits -> batches of at most 16, each caller gets its own row;
    a failing forward pass fails every caller of that batch (and the next batch still runs)."""
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("forward failed")
        return np.array([[float(t.split()[-1]), len(t)] for t in texts], dtype=np.float32)

    async def scenario():
        batcher = MicroBatcher("muq", embed, max_batch=16, max_wait_s=0.05)
        batcher.start()
        try:
            rows = await asyncio.gather(*(batcher.submit(f"query {i}") for i in range(40)))
            failed = await asyncio.gather(batcher.submit("boom"), batcher.submit("query 7"),
                                          return_exceptions=True)
            after = await batcher.submit("query 99")
        finally:
            await batcher.stop()
        return rows, failed, after

    rows, failed, after = asyncio.run(scenario())
    assert [r[0] for r in rows] == list(range(40))
    assert [len(c) for c in calls[:3]] == [16, 16, 8]
    assert all(isinstance(f, RuntimeError) for f in failed) and calls[3] == ["boom", "query 7"]
    assert after[0] == 99


def test_load_models_from_a_bucket(exports, loaded):
    """--models may be a bucket URI (memory:// stands in for gs://): exports are found and loaded."""
    root = f"memory://serve-test/{uuid.uuid4().hex}/checkpoints"
    fs = fsspec.filesystem("memory")
    fs.put(str(exports) + "/", root.removeprefix("memory://"), recursive=True)
    models, locations = load_models(root, "cpu", names=["latent"])
    assert list(models) == ["latent"] and locations["latent"].startswith("memory://")
    np.testing.assert_allclose(models["latent"].embed_text(QUERIES[3]), loaded["latent"].embed_text(QUERIES[3]),
                               atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no export for \\['mert'\\]"):
        load_models(root, "cpu", names=["mert"])
