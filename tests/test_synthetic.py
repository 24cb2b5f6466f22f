"""The synthetic corpus: attributes, captions, MIDI and the rendered audio follow each other."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections import Counter

import io

import numpy as np
import pytest
import soundfile as sf

from musictext.ingest.synthetic.attributes import (
    ARTICULATIONS,
    DRUMS,
    DYNAMICS,
    FAMILIES,
    MAX_SECONDS,
    MIN_SECONDS,
    MODES,
    REGISTERS,
    TEMPI,
    ClipSpec,
    make_spec,
)
from musictext.ingest.synthetic.captions import N_CAPTIONS, VOCABULARY, captions_for, tags_for
from musictext.ingest.synthetic.midi import build_midi
from musictext.ingest.synthetic.render import (
    SAMPLE_RATE,
    SOUNDFONT_ENV,
    check_renderer,
    render,
    wav_bytes,
)

SR = SAMPLE_RATE
# Words a listener would use for each family; every caption must contain its family's word.
FAMILY_WORDS = {
    "piano": "piano", "strings": "string", "brass": "brass", "flute": "flute", "guitar": "guitar",
    "organ": "organ", "synth lead": "lead", "synth pad": "pad", "bass": "bass",
    "marimba": "marimba", "choir": "choir",
}


# ----------------------------------------------------------------------------- attributes


def test_specs_are_deterministic_and_seed_dependent():
    a = [make_spec(7, i) for i in range(60)]
    assert a == [make_spec(7, i) for i in range(60)]
    assert [captions_for(s) for s in a] == [captions_for(make_spec(7, i)) for i in range(60)]
    b = [make_spec(8, i) for i in range(60)]
    assert sum(x.to_dict() != y.to_dict() for x, y in zip(a, b)) > 50


def test_balance_every_family_in_every_split():
    specs = [make_spec(0, i) for i in range(440)]
    per_split = Counter(s.split for s in specs)
    assert per_split["train"] / 440 == pytest.approx(0.7, abs=0.05)
    assert per_split["valid"] / 440 == pytest.approx(0.1, abs=0.03)
    assert per_split["test"] / 440 == pytest.approx(0.2, abs=0.03)
    assert {(s.family, s.split) for s in specs} == {(f.name, sp) for f in FAMILIES for sp in ("train", "valid", "test")}
    for attr, values in [("tempo", TEMPI), ("register", REGISTERS), ("mode", MODES),
                         ("dynamics", DYNAMICS), ("articulation", ARTICULATIONS), ("drums", DRUMS)]:
        counts = Counter(getattr(s, attr) for s in specs)
        assert set(counts) == set(values), attr
        assert max(counts.values()) - min(counts.values()) <= len(FAMILIES) * 2, (attr, counts)
    assert len(FAMILIES) >= 8 and len({f.program for f in FAMILIES}) == len(FAMILIES)


def test_spec_values_in_range():
    for i in range(200):
        s = make_spec(3, i)
        lo, hi = TEMPI[s.tempo]
        assert lo <= s.bpm <= hi
        assert MIN_SECONDS <= s.duration_s <= MAX_SECONDS
        assert s.key.endswith(s.mode) and s.track_id == f"synthetic-s3-{i:06d}"


# ----------------------------------------------------------------------------- captions


def _mentions(caption: str, words) -> bool:
    return any(w in caption.lower() for w in words)


def test_captions_mention_every_attribute():
    for i in range(120):
        s = make_spec(1, i)
        caps = captions_for(s)
        assert len(caps) == N_CAPTIONS
        for cap in caps:
            low = cap.lower()
            assert FAMILY_WORDS[s.family] in low, cap
            assert s.mode in low, cap
            assert ("drum" in low or "percussion" in low), cap
            negated = re.search(r"\b(no|without|unaccompanied)\b", low) is not None
            assert negated == (not s.drums), cap
            assert _mentions(cap, VOCABULARY["tempo"][s.tempo]) or str(s.bpm) in cap, cap
            assert _mentions(cap, VOCABULARY["register"][s.register]), cap
            assert _mentions(cap, VOCABULARY["dynamics"][s.dynamics]), cap
            assert _mentions(cap, VOCABULARY["articulation"][s.articulation]), cap
            # No synonym of the opposite value leaks in.
            other = "soft" if s.dynamics == "loud" else "loud"
            assert not _mentions(cap, VOCABULARY["dynamics"][other]), cap


def test_captions_vary_in_wording_and_order():
    specs = [make_spec(0, i) for i in range(50)]
    for s in specs:
        caps = captions_for(s)
        assert len(set(caps)) == len(caps)
        assert len({c.split()[0].lower() for c in caps}) >= 2  # not one template with swaps
    openings = Counter(" ".join(c.split()[:1]) for s in specs for c in captions_for(s))
    assert len(openings) >= 10
    assert len({c for s in specs for c in captions_for(s)}) == 50 * N_CAPTIONS


def test_tags_list_the_attributes():
    s = make_spec(0, 5)
    tags = tags_for(s)
    for expected in (s.family, s.tempo, s.mode, s.dynamics, s.articulation, s.key.lower()):
        assert expected in tags
    assert ("drums" in tags) == s.drums and ("no drums" in tags) == (not s.drums)


# ----------------------------------------------------------------------------- MIDI


def _variant(index: int = 0, **kw) -> ClipSpec:
    return dataclasses.replace(make_spec(0, index), **kw)


def test_midi_follows_the_spec():
    s = _variant(family="piano", mode="minor", tonic=9, key="A minor", drums=True)
    pm = build_midi(s)
    melodic = [i for i in pm.instruments if not i.is_drum]
    assert len(melodic) == 1 and melodic[0].program == 0
    a_minor = {9, 11, 0, 2, 4, 5, 7}
    assert {n.pitch % 12 for n in melodic[0].notes} <= a_minor
    assert any(i.is_drum for i in pm.instruments)
    assert max(n.end for i in pm.instruments for n in i.notes) <= s.duration_s + 1e-9
    assert not any(i.is_drum for i in build_midi(dataclasses.replace(s, drums=False)).instruments)


def test_midi_register_dynamics_articulation():
    def notes(**kw):
        return build_midi(_variant(3, drums=False, **kw)).instruments[0].notes

    mean_pitch = {r: np.mean([n.pitch for n in notes(register=r)]) for r in REGISTERS}
    assert mean_pitch["low"] + 8 < mean_pitch["mid"] < mean_pitch["high"] - 8
    vel = {d: np.mean([n.velocity for n in notes(dynamics=d)]) for d in DYNAMICS}
    assert vel["soft"] + 30 < vel["loud"]
    dur = {a: np.mean([n.end - n.start for n in notes(articulation=a)]) for a in ARTICULATIONS}
    assert dur["staccato"] < 0.5 * dur["legato"]


def test_tempo_sets_note_density():
    def onsets_per_s(tempo, bpm):
        pm = build_midi(_variant(4, tempo=tempo, bpm=bpm, drums=False, family="flute"))
        return len({round(n.start, 3) for n in pm.instruments[0].notes}) / pm.get_end_time()

    assert onsets_per_s("fast", 150) > 1.3 * onsets_per_s("slow", 64)


# ----------------------------------------------------------------------------- rendering


@pytest.fixture(scope="module")
def renderer():
    return check_renderer()


def _render(renderer, **kw) -> np.ndarray:
    """The mono mix of a render (what the spectral checks listen to)."""
    kw.setdefault("duration_s", 4.0)  # shorter than the corpus clips: keeps the suite fast
    return render(_variant(**kw), *renderer).mean(axis=1)


def _power_spectrum(audio: np.ndarray, n: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    frames = np.lib.stride_tricks.sliding_window_view(audio, n)[:: n // 2] * np.hanning(n)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2, np.fft.rfftfreq(n, 1 / SR)


def _centroid(audio: np.ndarray) -> float:
    p, f = _power_spectrum(audio)
    return float((p * f).sum() / p.sum())


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio**2)))


def test_render_length_and_determinism(renderer):
    s = make_spec(0, 2)
    a = render(s, *renderer)
    assert a.dtype == np.float32 and a.shape == (round(s.duration_s * SR), 2)
    assert 1e-3 < np.abs(a).max() <= 0.99
    data = wav_bytes(a)
    assert data == wav_bytes(render(s, *renderer))
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.subtype) == (SR, 2, "PCM_16")


def test_render_is_fluidsynths_stereo(renderer):
    """L and R differ (reverb, chorus, panning), so Music2Latent's two-channel path is exercised."""
    for index in range(4):
        a = render(make_spec(0, index), *renderer)
        side, mid = a[:, 0] - a[:, 1], a.mean(axis=1)
        assert _rms(side) > 0.01 * _rms(mid), index


def test_high_register_is_brighter(renderer):
    for family in ("piano", "bass"):
        c = {r: _centroid(_render(renderer, family=family, register=r, drums=False)) for r in ("low", "high")}
        assert c["high"] > 1.3 * c["low"], (family, c)


def test_loud_is_louder(renderer):
    soft = _rms(_render(renderer, family="strings", dynamics="soft", drums=False))
    loud = _rms(_render(renderer, family="strings", dynamics="loud", drums=False))
    assert loud > 2.5 * soft


def test_drums_add_onsets_and_highs(renderer):
    def features(audio):
        p, f = _power_spectrum(audio)
        flux = np.maximum(np.diff(np.log1p(100 * np.sqrt(p)), axis=0), 0).sum(axis=1)
        return p[:, f > 5000].sum() / p.sum(), flux.mean()

    hf0, flux0 = features(_render(renderer, family="synth pad", articulation="legato", drums=False))
    hf1, flux1 = features(_render(renderer, family="synth pad", articulation="legato", drums=True))
    assert hf1 > 20 * hf0 and flux1 > 2 * flux0


def test_families_sound_different(renderer):
    edges = 50 * 2 ** (np.arange(26) / 3)  # third-octave bands 50 Hz .. 16 kHz

    def band_db(audio):
        p, f = _power_spectrum(audio, 4096)
        e = np.array([p[:, (f >= lo) & (f < hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])])
        return 10 * np.log10(e / e.sum() + 1e-12)

    bands = {f.name: band_db(_render(renderer, family=f.name, register="mid", drums=False)) for f in FAMILIES}
    closest = min(np.abs(bands[a] - bands[b]).mean() for a, b in itertools.combinations(bands, 2))
    assert closest > 3.0


def test_missing_soundfont_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv(SOUNDFONT_ENV, str(tmp_path / "none.sf2"))
    with pytest.raises(RuntimeError, match="timgm6mb-soundfont"):
        check_renderer()


def test_missing_fluidsynth_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install -y fluidsynth"):
        check_renderer()
