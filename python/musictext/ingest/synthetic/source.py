"""The ``synthetic`` source: shards are index ranges, and "downloading" one renders it here."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

from musictext import storage
from musictext.ingest.base import Source, even_shards
from musictext.ingest.synthetic.attributes import SOURCE, ClipSpec, make_spec
from musictext.ingest.synthetic.captions import captions_for, tags_for
from musictext.ingest.synthetic.render import check_renderer, render, wav_bytes
from musictext.logs import progress
from musictext.rejects import ItemError, Rejections

LICENCE = "CC0-1.0 (generated)"


def track_row(spec: ClipSpec, rel_path: str) -> dict:
    """The manifest row (schema.TRACK_FIELDS) of a rendered clip."""
    return {
        "track_id": spec.track_id,
        "source": SOURCE,
        "split": spec.split,
        "path": rel_path,
        "captions": captions_for(spec),
        "tags": tags_for(spec),
        "licence": LICENCE,
    }


def render_workers() -> int:
    """Parallel fluidsynth processes: $MUSICTEXT_WORKERS, else one per CPU (max 8)."""
    env = os.environ.get("MUSICTEXT_WORKERS")
    return max(1, int(env)) if env else min(os.cpu_count() or 1, 8)


class SyntheticSource(Source):
    """Shards are index ranges; every clip is a pure function of (seed, index)."""

    name = SOURCE

    def plan_shards(self, corpus_size: int, shard_size: int, seed: int) -> list[dict]:
        return even_shards(self.name, corpus_size, shard_size, seed)

    def download_shard(self, shard: dict, out_dir: str, rejections: Rejections) -> list[dict]:
        fluidsynth, soundfont = check_renderer()
        indices = range(shard["start"], shard["start"] + shard["size"])
        specs = [make_spec(shard["seed"], i) for i in indices]

        def one(spec: ClipSpec) -> dict:
            rel = f"audio/{spec.track_id}.wav"
            audio = render(spec, fluidsynth, soundfont)
            storage.write_bytes(storage.join(out_dir, rel), wav_bytes(audio))
            return track_row(spec, rel)

        rows = []
        with ThreadPoolExecutor(max_workers=render_workers()) as pool:
            futures = [(spec, pool.submit(one, spec)) for spec in specs]
            for spec, fut in progress(futures, desc=f"render synthetic shard {shard['shard']}"):
                try:
                    rows.append(fut.result())
                except ItemError as err:
                    rejections.add(err.item, err.reason)
                except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as err:
                    rejections.add(spec.track_id, f"render failed: {type(err).__name__}: {err}")
        return rows
