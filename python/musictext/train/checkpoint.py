"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is ONE file, ``step-<8 digits>.pt`` (torch.save of a dict), in ``<out>/checkpoints/``
(a local directory or a bucket prefix), written to a temporary name and moved into place
(storage.write_bytes), so a killed writer never leaves a partial checkpoint under its name. ``checkpoints.json`` (written after the file, the same way) lists them with
their validation R@1; a file it does not list is an interrupted write and is ignored.

What is kept: the newest ``keep`` checkpoints plus the best by validation R@1.
"""

from __future__ import annotations

import io
import logging
import random
import re
from dataclasses import dataclass

import numpy as np
import torch

from musictext import storage

log = logging.getLogger(__name__)

LISTING = "checkpoints.json"
NAME = re.compile(r"^step-(\d{8})\.pt$")


def rng_state() -> dict:
    """Every random generator the training step reads (dropout, shuffles, caption choice)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Entry:
    step: int
    file: str
    valid_r1: float | None = None


class CheckpointStore:
    """The checkpoints of one training stage under ``directory`` (local path or bucket URI)."""

    def __init__(self, directory: str, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = directory
        self.keep = keep

    def clean_temporaries(self) -> int:
        """Remove what a killed writer left (``*.tmp-*`` siblings); returns how many."""
        fs, path = storage.fs_for(self.directory)
        if not fs.exists(path):
            return 0
        leftovers = [f for f in fs.ls(path, detail=False) if ".tmp-" in f.rsplit("/", 1)[-1]]
        for f in leftovers:
            fs.rm(f)
        if leftovers:
            log.info("removed %d interrupted checkpoint write(s)", len(leftovers))
        return len(leftovers)

    def remove_all(self) -> None:
        """Delete every checkpoint and the listing (a finished stage no longer resumes)."""
        fs, path = storage.fs_for(self.directory)
        if fs.exists(path):
            fs.rm(path, recursive=True)

    def entries(self) -> list[Entry]:
        listing = storage.join(self.directory, LISTING)
        if not storage.exists(listing):
            return []
        return [Entry(**e) for e in storage.read_json(listing)["checkpoints"]]

    def latest(self) -> Entry | None:
        entries = self.entries()
        return max(entries, key=lambda e: e.step) if entries else None

    def best(self) -> Entry | None:
        scored = [e for e in self.entries() if e.valid_r1 is not None]
        return max(scored, key=lambda e: (e.valid_r1, e.step)) if scored else None

    def save(self, step: int, payload: dict, valid_r1: float | None = None) -> str:
        """Write checkpoint ``step`` atomically, list it, then drop those no longer kept."""
        name = f"step-{step:08d}.pt"
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        storage.write_bytes(storage.join(self.directory, name), buffer.getvalue())
        entries = [e for e in self.entries() if e.step != step] + [Entry(step, name, valid_r1)]
        kept = self._kept(entries)
        self._write_listing(kept)
        for gone in {e.file for e in entries} - {e.file for e in kept}:
            fs, path = storage.fs_for(storage.join(self.directory, gone))
            if fs.exists(path):
                fs.rm(path)
        log.info("checkpoint %s (%.1f MB)", name, buffer.tell() / 2**20)
        return storage.join(self.directory, name)

    def load(self, entry: Entry) -> dict:
        data = storage.read_bytes(storage.join(self.directory, entry.file))
        # weights_only=False: the payload holds optimiser state and Python/NumPy RNG states,
        # written by this program into the run's own directory.
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)

    def _kept(self, entries: list[Entry]) -> list[Entry]:
        newest = sorted(entries, key=lambda e: e.step)[-self.keep:]
        scored = [e for e in entries if e.valid_r1 is not None]
        best = [max(scored, key=lambda e: (e.valid_r1, e.step))] if scored else []
        return sorted({e.file: e for e in newest + best}.values(), key=lambda e: e.step)

    def _write_listing(self, entries: list[Entry]) -> None:
        storage.write_json(storage.join(self.directory, LISTING), {"checkpoints": [e.__dict__ for e in entries]})
