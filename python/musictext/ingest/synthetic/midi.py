"""The pretty_midi piece of a synthetic clip (a chord progression, a melody and drums), and of a
full song (one such piece per section, one after another)."""

from __future__ import annotations

import math

import numpy as np
import pretty_midi

from musictext.ingest.synthetic.attributes import (
    DYNAMICS,
    FAMILY_BY_NAME,
    REGISTERS,
    SALT_MUSIC,
    SALT_SONG_MUSIC,
    ClipSpec,
    SongSpec,
)

# Scale steps of each mode, in semitones above the tonic.
_INTERVALS = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Chord progressions as 0-based scale degrees, one chord per bar.
_PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4), (1, 4, 0, 0)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2)),
}
# Melody note lengths in beats, with probabilities per tempo: slow music moves in shorter
# values so it does not sound empty, fast music in longer ones so it stays playable.
_RHYTHM = {
    "slow": ((0.5, 1.0, 2.0), (0.5, 0.4, 0.1)),
    "medium": ((0.5, 1.0, 2.0), (0.4, 0.5, 0.1)),
    "fast": ((0.5, 1.0, 2.0), (0.2, 0.55, 0.25)),
}
# GM percussion (channel 10) patterns over 8 eighth-note slots: (pitch, slots, velocity offset).
_KICK, _SNARE, _CLOSED_HAT, _OPEN_HAT, _CRASH = 36, 38, 42, 46, 49
_DRUM_PATTERNS = (
    ((_KICK, (0, 4, 5), 0), (_SNARE, (2, 6), 0), (_CLOSED_HAT, tuple(range(8)), -22)),
    ((_KICK, (0, 5), 0), (_SNARE, (4,), 0), (_CLOSED_HAT, tuple(range(8)), -22)),
    ((_KICK, (0, 2, 4, 6), 0), (_SNARE, (2, 6), -6), (_OPEN_HAT, (1, 3, 5, 7), -20)),
)


def _degree_pitch(base: int, intervals: tuple[int, ...], degree: int) -> int:
    """MIDI pitch of a (possibly negative or > 6) scale degree above the tonic at ``base``."""
    octave, step = divmod(degree, 7)
    return base + 12 * octave + intervals[step]


def _tonic_base(spec: ClipSpec) -> int:
    """The tonic pitch that puts the melody range (about 10 degrees) around the register."""
    target = FAMILY_BY_NAME[spec.family].center + REGISTERS[spec.register] - 5
    return target + ((spec.tonic - target) % 12 + 6) % 12 - 6


def _nearest_chord_tone(degree: int, chord: int, lo: int, hi: int) -> int:
    tones = {chord % 7, (chord + 2) % 7, (chord + 4) % 7}
    for offset in (0, -1, 1, -2, 2, -3, 3):
        d = degree + offset
        if lo <= d <= hi and d % 7 in tones:
            return d
    return degree


def _velocity(base: int, rng: np.random.Generator, accent: int = 0) -> int:
    return int(np.clip(base + accent + rng.integers(-5, 6), 1, 127))


def _note_length(spec: ClipSpec, slot_s: float) -> float:
    # Legato overlaps the next note slightly; staccato keeps about a third of the slot.
    if spec.articulation == "legato":
        return slot_s * 1.02
    return max(0.06, 0.3 * slot_s)


def _melody(spec, inst, chords, base, intervals, vel, rng) -> None:
    beat = 60.0 / spec.bpm
    lengths, probs = _RHYTHM[spec.tempo]
    lo, hi = 0, 10
    degree = int(rng.choice((2, 4, 7)))
    for bar_i, chord in enumerate(chords):
        pos = 0.0
        while pos < 4.0:
            length = float(rng.choice(lengths, p=probs))
            length = min(length, 4.0 - pos)
            step = rng.choice((-2, -1, 0, 1, 2), p=(0.15, 0.3, 0.1, 0.3, 0.15))
            degree = int(np.clip(degree + step, lo, hi))
            if pos in (0.0, 2.0):  # strong beats land on chord tones
                degree = _nearest_chord_tone(degree, chord, lo, hi)
            start = (bar_i * 4 + pos) * beat
            pitch = _degree_pitch(base, intervals, degree)
            velocity = _velocity(vel, rng, 8 if pos == 0.0 else 0)
            end = start + _note_length(spec, length * beat)
            inst.notes.append(pretty_midi.Note(velocity, pitch, start, end))
            pos += length


def _accompaniment(spec, inst, chords, base, intervals, vel, rng) -> None:
    beat = 60.0 / spec.bpm
    acc_base = base - 12
    arpeggio = bool(rng.integers(2))
    for bar_i, chord in enumerate(chords):
        tones = [_degree_pitch(acc_base, intervals, chord + d) for d in (0, 2, 4)]
        bar_start = bar_i * 4 * beat
        if arpeggio:
            cycle = tones + [tones[0] + 12] + tones[:0:-1]  # up and back down
            for slot in range(8):
                start = bar_start + slot * beat / 2
                pitch = cycle[slot % len(cycle)]
                end = start + _note_length(spec, beat / 2)
                inst.notes.append(pretty_midi.Note(_velocity(vel, rng), pitch, start, end))
        elif spec.articulation == "legato":
            for pitch in tones:  # one sustained chord per bar
                end = bar_start + 4 * beat
                inst.notes.append(pretty_midi.Note(_velocity(vel, rng), pitch, bar_start, end))
        else:
            for b in range(4):  # a short chord stab on every beat
                start = bar_start + b * beat
                end = start + _note_length(spec, beat)
                for pitch in tones:
                    inst.notes.append(pretty_midi.Note(_velocity(vel, rng), pitch, start, end))


def _drum_part(spec, n_bars, vel, rng) -> pretty_midi.Instrument:
    kit = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    beat = 60.0 / spec.bpm
    pattern = _DRUM_PATTERNS[int(rng.integers(len(_DRUM_PATTERNS)))]
    kit.notes.append(pretty_midi.Note(_velocity(vel, rng), _CRASH, 0.0, 0.3))
    for bar_i in range(n_bars):
        for pitch, slots, offset in pattern:
            for slot in slots:
                start = (bar_i * 4 + slot / 2) * beat
                velocity = _velocity(vel, rng, offset)
                kit.notes.append(pretty_midi.Note(velocity, pitch, start, start + 0.1))
    return kit


def _trim(instruments: list[pretty_midi.Instrument], duration: float) -> None:
    """Drop notes starting in the last 50 ms and cut the rest at the clip end."""
    for inst in instruments:
        inst.notes = [
            pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, duration))
            for n in inst.notes
            if n.start < duration - 0.05
        ]


def _parts(spec: ClipSpec, rng: np.random.Generator) -> list[pretty_midi.Instrument]:
    """A chord progression in the key plus a melody (and drums) that follow the spec, from 0 s
    to ``spec.duration_s``."""
    family = FAMILY_BY_NAME[spec.family]
    intervals = _INTERVALS[spec.mode]
    progressions = _PROGRESSIONS[spec.mode]
    progression = progressions[int(rng.integers(len(progressions)))]
    n_bars = math.ceil(spec.duration_s / (240.0 / spec.bpm)) + 1
    chords = [progression[b % len(progression)] for b in range(n_bars)]
    lo, hi = DYNAMICS[spec.dynamics]
    vel = int(rng.integers(lo, hi + 1))
    base = _tonic_base(spec)

    inst = pretty_midi.Instrument(program=family.program, name=family.name)
    _melody(spec, inst, chords, base, intervals, vel, rng)
    if family.polyphonic:
        _accompaniment(spec, inst, chords, base, intervals, vel - 14, rng)
    parts = [inst]
    if spec.drums:
        parts.append(_drum_part(spec, n_bars, vel, rng))
    _trim(parts, spec.duration_s)
    return parts


def build_midi(spec: ClipSpec) -> pretty_midi.PrettyMIDI:
    """The short piece of a spec."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(spec.bpm))
    pm.instruments.extend(_parts(spec, np.random.default_rng([spec.seed, SALT_MUSIC, spec.index])))
    return pm


def build_song_midi(song: SongSpec) -> pretty_midi.PrettyMIDI:
    """A full song: each section's piece (its own instruments, so a family change is a program
    change) played from the section's start until the next section begins."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=float(song.sections[0].bpm))
    for k, (section, start) in enumerate(zip(song.sections, song.starts)):
        rng = np.random.default_rng([song.seed, SALT_SONG_MUSIC, song.index, k])
        for inst in _parts(section, rng):
            for note in inst.notes:
                note.start += start
                note.end += start
            pm.instruments.append(inst)
    return pm
