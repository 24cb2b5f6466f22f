"""Full songs of the synthetic source (phase 2): sections whose attributes change, captions that
tell the song section by section, audio that follows them, and the phase carried from the record
through the clip stage into text.parquet."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import numpy as np
import pytest

from musictext import layout, schema, storage
from musictext.clip.cut import clip_shard
from musictext.config import load_family_config
from musictext.ingest.base import ListContext
from musictext.ingest.download import download_shard
from musictext.ingest.plan import plan
from musictext.ingest.synthetic import SyntheticSource
from musictext.ingest.synthetic.attributes import (
    FAMILIES,
    FAMILY_BY_NAME,
    SONG_CHANGES,
    SONG_SHARE,
    SongSpec,
    make_song_spec,
    make_spec,
)
from musictext.ingest.synthetic.captions import (
    N_CAPTIONS,
    SONG_VOCABULARY,
    song_captions_for,
    song_tags_for,
)
from musictext.ingest.synthetic.render import SAMPLE_RATE, check_renderer, render_song, wav_bytes
from musictext.ingest.synthetic.source import song_record_for
from musictext.rejects import ItemError, read_rejections
from musictext.text.prepare import prepare_text

SR = SAMPLE_RATE
SHORT_SONG = {"song_min_seconds": 20, "song_max_seconds": 24}  # keeps renders ~1 s each


def _listed(options: dict, limit: int | None, seed: int = 0) -> list:
    source = SyntheticSource()
    return list(source.records(source.options(options), ListContext(seed=seed, limit=limit)))


# ----------------------------------------------------------------------------- specs


def test_song_sections_change_and_fill_the_song():
    songs = [make_song_spec(2, i) for i in range(80)]
    assert Counter(len(s.sections) for s in songs).keys() == {2, 3, 4}
    for s in songs:
        assert 60.0 <= s.duration_s <= 120.0 + 1e-9
        assert s.starts[0] == 0.0 and all(b > a for a, b in zip(s.starts, s.starts[1:]))
        assert all(sec.duration_s > 0.4 * s.duration_s / len(s.sections) for sec in s.sections)
        for k in range(1, len(s.sections)):
            assert 1 <= len(s.changes(k)) <= 2, (s.track_id, k)
            assert set(s.changes(k)) <= set(SONG_CHANGES)
        # One key, register and articulation per song; every section is the song's.
        for attr in ("key", "mode", "register", "articulation", "track_id", "split"):
            assert len({getattr(sec, attr) for sec in s.sections}) == 1, attr
        assert s.sections[0].track_id == s.track_id and s.sections[0].key == s.key
    assert {s.sections[0].family for s in songs[: len(FAMILIES)]} == {f.name for f in FAMILIES}
    changed = Counter(c for s in songs for k in range(1, len(s.sections)) for c in s.changes(k))
    assert set(changed) == set(SONG_CHANGES)
    assert Counter(s.split for s in songs) == {"train": 56, "valid": 8, "test": 16}  # 7/1/2 per 10 songs


def test_songs_are_deterministic_from_seed_and_index():
    a = [make_song_spec(5, i) for i in range(20)]
    assert a == [make_song_spec(5, i) for i in range(20)]
    assert [song_captions_for(s) for s in a] == [song_captions_for(make_song_spec(5, i)) for i in range(20)]
    b = [make_song_spec(6, i) for i in range(20)]
    assert sum(x != y for x, y in zip(a, b)) == 20
    assert make_song_spec(5, 3, 20, 24).duration_s <= 24.0
    with pytest.raises(ValueError, match="min_seconds"):
        make_song_spec(0, 0, 90, 80)


def test_song_ids_sort_among_the_short_pieces():
    """The listing cuts shards in track-id order: songs spread over them, not all in the last."""
    song = make_song_spec(0, 2)
    after, before = make_spec(0, 3 * SONG_SHARE - 1).track_id, make_spec(0, 3 * SONG_SHARE).track_id
    assert after < song.track_id < before


# ----------------------------------------------------------------------------- captions


def _words(caption: str, options) -> list[int]:
    """Start positions of whole-word matches of any of ``options`` in ``caption``."""
    low = caption.lower()
    return sorted(m.start() for o in options for m in re.finditer(rf"\b{re.escape(o.lower())}\b", low))


def test_captions_tell_each_section_in_order():
    for i in range(60):
        song = make_song_spec(1, i)
        captions = song_captions_for(song)
        assert len(captions) == N_CAPTIONS == len(set(captions))
        for cap in captions:
            pos = -1
            for sec in song.sections:  # each section's instrument, after the previous one's
                later = [p for p in _words(cap, FAMILY_BY_NAME[sec.family].nouns) if p > pos]
                assert later, (cap, [s.family for s in song.sections])
                pos = later[0]
            assert song.key.lower() in cap.lower(), cap
            dyn = SONG_VOCABULARY["dynamics"]
            for k in range(1, len(song.sections)):
                a, b = song.sections[k - 1], song.sections[k]
                if "dynamics" in song.changes(k):  # both levels named, the earlier one first
                    assert _words(cap, dyn[a.dynamics]) and _words(cap, dyn[b.dynamics]), cap
                if "tempo" in song.changes(k):
                    named = _words(cap, SONG_VOCABULARY["tempo"][b.tempo]) + _words(
                        cap, [w for ws in SONG_VOCABULARY["tempo_change"].values() for w in ws])
                    assert named or str(b.bpm) in cap, cap
                if "drums" in song.changes(k):
                    assert "drum" in cap.lower() or "percussion" in cap.lower(), cap
            first = song.sections[0]
            others = {"soft": "loud", "loud": "soft"}
            if all(s.dynamics == first.dynamics for s in song.sections):  # no level it never has
                assert not _words(cap, dyn[others[first.dynamics]]), cap


def test_first_caption_opening_names_the_first_section():
    song = make_song_spec(0, 4)
    narrative = next(c for c in song_captions_for(song, 5) if "opens with" in c)
    opening = narrative.split(";")[0]
    assert _words(opening, FAMILY_BY_NAME[song.sections[0].family].nouns)
    assert _words(opening, SONG_VOCABULARY["dynamics"][song.sections[0].dynamics])


def test_song_tags():
    song = make_song_spec(0, 0)
    tags = song_tags_for(song)
    assert tags[0] == "full song" and song.key.lower() in tags and song.mode in tags
    for sec in song.sections:
        assert {sec.family, sec.tempo, sec.dynamics} <= set(tags)
    assert len(tags) == len(set(tags))


# ----------------------------------------------------------------------------- audio


def _controlled_song() -> SongSpec:
    """24 s in four 6 s sections: soft strings, loud strings, loud bass, loud bass with drums."""
    base = make_song_spec(0, 1, 24, 24)
    first = dataclasses.replace(base.sections[0], family="strings", tempo="medium", bpm=100, register="mid",
                                dynamics="soft", articulation="legato", drums=False, duration_s=6.0)
    plan_ = [{}, {"dynamics": "loud"}, {"dynamics": "loud", "family": "bass"},
             {"dynamics": "loud", "family": "bass", "drums": True}]
    return dataclasses.replace(base, sections=tuple(dataclasses.replace(first, **p) for p in plan_))


def _section_audio(song: SongSpec, audio: np.ndarray, k: int) -> np.ndarray:
    """Section ``k`` of the mono mix, 0.5 s kept clear of each boundary (reverb tails)."""
    start, length = song.starts[k], song.sections[k].duration_s
    return audio.mean(axis=1)[int((start + 0.5) * SR): int((start + length - 0.5) * SR)]


def _spectrum(x: np.ndarray, n: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2] * np.hanning(n)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2, np.fft.rfftfreq(n, 1 / SR)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def _centroid(x: np.ndarray) -> float:
    p, f = _spectrum(x)
    return float((p * f).sum() / p.sum())


def _high_share(x: np.ndarray) -> float:
    p, f = _spectrum(x)
    return float(p[:, f > 5000].sum() / p.sum())


def test_rendered_sections_follow_their_attributes():
    song = _controlled_song()
    assert [song.changes(k) for k in range(4)] == [(), ("dynamics",), ("family",), ("drums",)]
    renderer = check_renderer()
    audio = render_song(song, *renderer)
    assert audio.shape == (round(song.duration_s * SR), 2) and audio.dtype == np.float32
    sections = [_section_audio(song, audio, k) for k in range(4)]
    assert _rms(sections[1]) > 2.5 * _rms(sections[0])  # soft -> loud
    assert _centroid(sections[2]) < 0.7 * _centroid(sections[1])  # strings -> bass
    assert _high_share(sections[3]) > 10 * _high_share(sections[2])  # drums come in
    assert wav_bytes(audio) == wav_bytes(render_song(song, *renderer))


# ----------------------------------------------------------------------------- records


def test_song_records_are_whole_track_phase_2():
    records = _listed({"full_songs": 2, **SHORT_SONG}, limit=5, seed=4)
    assert [r.phase for r in records] == [1, 1, 1, 2, 2]
    short, songs = records[:3], records[3:]
    assert [r.track_id for r in short] == [make_spec(4, i).track_id for i in range(3)]
    assert not any(r.whole_track for r in short) and all(r.audio.piece == "clip" for r in short)
    for index, r in enumerate(songs):
        song = make_song_spec(4, index, 20, 24)
        assert r.track_id == song.track_id and r.whole_track and r.audio.piece == "song"
        assert (r.audio.seed, r.audio.index) == (4, index) and r.split == song.split
        assert r.captions == song_captions_for(song) and r.meta["duration_s"] == song.duration_s
        assert [s["family"] for s in r.meta["sections"]] == [s.family for s in song.sections]
    assert records == _listed({"full_songs": 2, **SHORT_SONG}, limit=5, seed=4)


def test_default_song_count_follows_the_corpus_size():
    def songs(limit, **options):
        return sum(r.phase == 2 for r in _listed(options, limit))

    assert songs(40) == 0 and songs(99) == 0  # quick runs and tests: short pieces only
    assert songs(120) == 120 // SONG_SHARE
    assert len(_listed({}, None)) == 400 and songs(None) == 400 // SONG_SHARE  # the demo's corpus
    assert songs(3, full_songs=5) == 3 and songs(400, full_songs=0) == 0


def test_a_song_rendered_with_other_options_than_listed_is_refused(tmp_path):
    record = song_record_for(make_song_spec(0, 0, 20, 24))
    source = SyntheticSource()
    with pytest.raises(ItemError, match="song options differ"):
        source.fetch(record, str(tmp_path), source.options({}))  # default lengths: 60-120 s


# ----------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def song_run(tmp_path_factory):
    """Listing, download, clip and text of 2 short pieces and 1 full song (the real stages)."""
    root = tmp_path_factory.mktemp("songs")
    listing, raw, clips, text = (str(root / d) for d in ("listing", "raw", "clips", "text"))
    shards = plan(["synthetic"], {"synthetic": {"full_songs": 1, **SHORT_SONG}}, 3, 3, 7, listing)
    download_shard(shards[0], listing, raw)
    summary = clip_shard(raw, clips, ["native"], 6.0, max_clips_per_track=3)
    text_summary = prepare_text([clips], text, load_family_config("muq", "demo").text)
    return root, summary, text_summary


def test_clip_stage_keeps_a_song_whole_and_writes_its_phase(song_run):
    root, summary, _ = song_run
    song = make_song_spec(7, 0, 20, 24)
    rows = {r["clip_id"]: r for r in storage.read_parquet(str(root / "clips" / layout.CLIPS)).to_pylist()}
    assert summary["full_songs"] == 1 and not read_rejections(str(root / "clips"))
    whole = rows.pop(f"{song.track_id}#0")
    assert whole["phase"] == 2 and whole["start_s"] == 0.0 and whole["end_s"] == pytest.approx(song.duration_s)
    assert not any(cid.startswith(song.track_id) for cid in rows)  # one clip, not cut into 6 s pieces
    assert rows and all(r["phase"] == 1 and r["end_s"] - r["start_s"] <= 6.0 for r in rows.values())


def test_text_parquet_carries_the_phase(song_run):
    root, _, text_summary = song_run
    table = storage.read_parquet(str(root / "text" / layout.TEXT))
    assert table.schema.equals(schema.TEXT_SCHEMA)
    phases = {cid: p for cid, p in zip(table["clip_id"].to_pylist(), table["phase"].to_pylist())}
    song_id = f"{make_song_spec(7, 0, 20, 24).track_id}#0"
    assert phases.pop(song_id) == 2 and set(phases.values()) == {1}
    assert list(table["clip_id"].to_pylist()).count(song_id) == N_CAPTIONS
    meta = storage.read_json(str(root / "text" / layout.META))
    assert meta["clips_per_phase"] == {"1": len(phases), "2": 1}
