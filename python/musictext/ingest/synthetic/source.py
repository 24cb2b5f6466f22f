"""The ``synthetic`` source: records are generated from (seed, index); fetching one renders it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

from musictext import storage
from musictext.ingest.base import ListContext, Source, SourceOptions
from musictext.ingest.fetch import Fetched, audio_rel
from musictext.ingest.records import GeneratedAudio, Record, make_record
from musictext.ingest.synthetic.attributes import SOURCE, ClipSpec, make_spec
from musictext.ingest.synthetic.captions import captions_for, tags_for
from musictext.ingest.synthetic.render import check_renderer, render, wav_bytes
from musictext.rejects import ItemError, Rejections

LICENCE = "CC0-1.0 (generated)"
DEFAULT_TRACKS = 400


def record_for(spec: ClipSpec) -> Record:
    """The record of a synthetic piece (the whole rendered piece is the item)."""
    return make_record(
        spec.track_id,
        track_id=spec.track_id,
        source=SOURCE,
        split=spec.split,
        captions=captions_for(spec),
        tags=tags_for(spec),
        licence=LICENCE,
        audio=GeneratedAudio(seed=spec.seed, index=spec.index),
        group=f"{SOURCE}:{spec.track_id}",
        meta={"duration_s": spec.duration_s},
    )


def render_workers() -> int:
    """Parallel fluidsynth processes: $MUSICTEXT_WORKERS, else one per CPU (max 8)."""
    env = os.environ.get("MUSICTEXT_WORKERS")
    return max(1, int(env)) if env else min(os.cpu_count() or 1, 8)


class SyntheticSource(Source):
    """Every piece is a pure function of (seed, index); nothing is downloaded."""

    name = SOURCE
    description = "MIDI pieces rendered with FluidSynth, captioned from the attributes that shape them"

    @property
    def fetch_workers(self) -> int:  # type: ignore[override]
        return render_workers()

    def records(self, opts: SourceOptions, ctx: ListContext) -> Iterator[Record]:
        for index in range(DEFAULT_TRACKS if ctx.limit is None else ctx.limit):
            yield record_for(make_spec(ctx.seed, index))

    def parse(self, meta_dir: str, opts: SourceOptions, rejections: Rejections) -> Iterator[Record]:
        raise ValueError("the synthetic source has no published metadata: its records are generated")

    def fetch(self, record: Record, out_dir: str, opts: SourceOptions) -> Fetched:
        fluidsynth, soundfont = check_renderer()
        spec = make_spec(record.audio.seed, record.audio.index)
        rel = audio_rel(spec.track_id, ".wav")
        try:
            audio = render(spec, fluidsynth, soundfont)
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            raise ItemError(spec.track_id, f"render failed: {type(err).__name__}: {err}") from None
        storage.write_bytes(storage.join(out_dir, rel), wav_bytes(audio))
        return Fetched(rel, None, None)
