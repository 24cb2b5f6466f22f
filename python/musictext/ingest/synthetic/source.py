"""The ``synthetic`` source: records are generated from (seed, index); fetching one renders it.

Two sequences of items, each a pure function of (seed, index): short pieces (phase 1, cut into
clips like any clip source) and full songs (phase 2, ``full_songs``: sections whose instrument,
tempo, dynamics or drums change, each song one whole-track clip).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import numpy as np
from pydantic import Field, model_validator

from musictext import schema, storage
from musictext.ingest.base import ListContext, Source, SourceOptions
from musictext.ingest.fetch import Fetched, audio_rel
from musictext.ingest.records import GeneratedAudio, Record, make_record
from musictext.ingest.synthetic.attributes import (
    MIN_SONG_SECONDS,
    SONG_SHARE,
    SOURCE,
    ClipSpec,
    SongSpec,
    make_song_spec,
    make_spec,
)
from musictext.ingest.synthetic.captions import captions_for, song_captions_for, song_tags_for, tags_for
from musictext.ingest.synthetic.render import check_renderer, render, render_song, wav_bytes
from musictext.rejects import ItemError, Rejections

LICENCE = "CC0-1.0 (generated)"
DEFAULT_TRACKS = 400
# Unset ``full_songs``: one item in SONG_SHARE is a full song, in corpora of at least
# MIN_CORPUS_FOR_SONGS items (smaller ones are tests and quick looks, where minute-long songs
# would take most of the time).
MIN_CORPUS_FOR_SONGS = 100


class SyntheticOptions(SourceOptions):
    # How many of the listed items are full songs (the rest are short pieces); unset: one in
    # SONG_SHARE for a corpus of at least MIN_CORPUS_FOR_SONGS items (33 of the demo's 400), else 0.
    full_songs: int | None = Field(default=None, ge=0)
    # Length range of a full song, in seconds (each drawn uniformly within it).
    song_min_seconds: float = Field(default=60.0, ge=MIN_SONG_SECONDS)
    song_max_seconds: float = Field(default=120.0, ge=MIN_SONG_SECONDS)

    @model_validator(mode="after")
    def _song_range(self) -> SyntheticOptions:
        if self.song_min_seconds > self.song_max_seconds:
            raise ValueError(f"song_min_seconds {self.song_min_seconds} exceeds song_max_seconds "
                             f"{self.song_max_seconds}")
        return self

    def songs_among(self, items: int) -> int:
        """How many of ``items`` listed items are full songs."""
        if self.full_songs is not None:
            return min(self.full_songs, items)
        return items // SONG_SHARE if items >= MIN_CORPUS_FOR_SONGS else 0

    def song_spec(self, seed: int, index: int) -> SongSpec:
        return make_song_spec(seed, index, self.song_min_seconds, self.song_max_seconds)


def _record(track_id: str, split: str, captions: list[str], tags: list[str], audio: GeneratedAudio,
            meta: dict, **extra) -> Record:
    """A generated item's record: its own group, the generated licence."""
    return make_record(track_id, track_id=track_id, source=SOURCE, split=split, captions=captions, tags=tags,
                       licence=LICENCE, audio=audio, group=f"{SOURCE}:{track_id}", meta=meta, **extra)


def record_for(spec: ClipSpec) -> Record:
    """The record of a synthetic piece (the whole rendered piece is the item)."""
    return _record(spec.track_id, spec.split, captions_for(spec), tags_for(spec),
                   GeneratedAudio(seed=spec.seed, index=spec.index), {"duration_s": spec.duration_s})


def song_record_for(song: SongSpec) -> Record:
    """The record of a full song: one whole-track item (phase 2) captioned as a whole."""
    sections = [{"start_s": start, "family": s.family, "tempo": s.tempo, "bpm": s.bpm, "dynamics": s.dynamics,
                 "drums": s.drums} for start, s in zip(song.starts, song.sections)]
    return _record(song.track_id, song.split, song_captions_for(song), song_tags_for(song),
                   GeneratedAudio(seed=song.seed, index=song.index, piece="song"),
                   {"duration_s": song.duration_s, "key": song.key, "sections": sections},
                   whole_track=True, phase=schema.SONG_PHASE)


def render_workers() -> int:
    """Parallel fluidsynth processes: $MUSICTEXT_WORKERS, else one per CPU (max 8)."""
    env = os.environ.get("MUSICTEXT_WORKERS")
    return max(1, int(env)) if env else min(os.cpu_count() or 1, 8)


class SyntheticSource(Source):
    """Every piece is a pure function of (seed, index); nothing is downloaded."""

    name = SOURCE
    description = ("MIDI pieces rendered with FluidSynth, captioned from the attributes that shape them; "
                   "full songs (phase 2) with option full_songs")
    Options = SyntheticOptions

    @property
    def fetch_workers(self) -> int:  # type: ignore[override]
        return render_workers()

    def records(self, opts: SyntheticOptions, ctx: ListContext) -> Iterator[Record]:
        items = DEFAULT_TRACKS if ctx.limit is None else ctx.limit
        songs = opts.songs_among(items)
        for index in range(items - songs):
            yield record_for(make_spec(ctx.seed, index))
        for index in range(songs):
            yield song_record_for(opts.song_spec(ctx.seed, index))

    def parse(self, meta_dir: str, opts: SourceOptions, rejections: Rejections) -> Iterator[Record]:
        raise ValueError("the synthetic source has no published metadata: its records are generated")

    def fetch(self, record: Record, out_dir: str, opts: SyntheticOptions) -> Fetched:
        fluidsynth, soundfont = check_renderer()
        try:
            track_id, audio = _render_record(record, opts, fluidsynth, soundfont)
        except (OSError, RuntimeError, subprocess.SubprocessError) as err:
            raise ItemError(record.track_id, f"render failed: {type(err).__name__}: {err}") from None
        rel = audio_rel(track_id, ".wav")
        storage.write_bytes(storage.join(out_dir, rel), wav_bytes(audio))
        return Fetched(rel, None, None)


def _render_record(record: Record, opts: SyntheticOptions, fluidsynth: str, soundfont: str) -> tuple[str, np.ndarray]:
    """(track id, audio) of a synthetic record, rendered from its (seed, index)."""
    seed, index = record.audio.seed, record.audio.index
    if record.audio.piece == "song":
        song = opts.song_spec(seed, index)
        _check_listed(record, song.track_id, song.duration_s)
        return song.track_id, render_song(song, fluidsynth, soundfont)
    spec = make_spec(seed, index)
    return spec.track_id, render(spec, fluidsynth, soundfont)


def _check_listed(record: Record, track_id: str, duration_s: float) -> None:
    """A song is drawn from the song length options too: rendered with other options than it
    was listed with, its audio would not match its captions."""
    listed = record.meta.get("duration_s")
    if track_id != record.track_id or listed != duration_s:
        raise ItemError(record.track_id, f"song options differ from the listing's: this song is {duration_s} s "
                                         f"({track_id}), the listed record says {listed} s")
