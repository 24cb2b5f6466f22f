"""Micro-batching: concurrent queries for one model share one forward pass.

A transformer forward over 16 short queries costs little more than over one on a CPU (and far
less than 16 on a GPU), so under load the service answers many more queries per second when it
embeds whatever arrived together. Each model gets an asyncio queue and one worker task: it takes
the first waiting query, collects more for at most ``max_wait_s`` or until ``max_batch``, runs
one ``embed_texts`` call in the model's own thread (the event loop keeps accepting requests
meanwhile), and hands each caller its row. Queries that arrive during a forward pass wait in the
queue and form the next batch, so a busy server batches without any added wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

log = logging.getLogger(__name__)

EmbedFn = Callable[[list[str]], np.ndarray]


class MicroBatcher:
    """Batches ``embed(texts) -> [N, dim]`` calls made concurrently through ``submit``."""

    def __init__(self, name: str, embed: EmbedFn, max_batch: int = 32, max_wait_s: float = 0.002):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.name = name
        self.embed = embed
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.batches = 0  # forward passes run, and the queries they answered (for /health)
        self.queries = 0
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        # One thread per model: a TextEmbedder is not meant for concurrent forward passes
        # (embed_texts toggles eval mode), and torch already spreads one pass over the cores.
        self._thread: ThreadPoolExecutor | None = None

    # -- lifecycle (inside the server's event loop) --------------------------------------------
    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{self.name}")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        self._worker = self._thread = None

    # -- API ------------------------------------------------------------------------------------
    async def submit(self, text: str) -> np.ndarray:
        """The embedding of ``text``, computed in a batch with whatever else is waiting."""
        if self._queue is None:
            raise RuntimeError(f"batcher {self.name!r} is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((text, future))
        return await future

    # -- worker -----------------------------------------------------------------------------------
    async def _collect(self) -> list[tuple[str, asyncio.Future]]:
        queue = self._queue
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        # A client that hung up while waiting leaves a cancelled future: skip its text.
        return [(text, fut) for text, fut in batch if not fut.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            texts = [text for text, _ in batch]
            try:
                vectors = await loop.run_in_executor(self._thread, self.embed, texts)
            except Exception as exc:
                log.exception("embedding a batch of %d for %s failed", len(texts), self.name)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.queries += len(batch)
            for (_, fut), vector in zip(batch, vectors, strict=True):
                if not fut.done():
                    fut.set_result(vector)
