"""The built-in demo corpus (source ``synthetic``): MIDI written here, rendered with FluidSynth.

Every clip is a pure function of ``(seed, index)``: the attributes, the captions, the MIDI and
(given the same FluidSynth build and soundfont) the WAV bytes. Captions are generated from the
same attributes that shape the sound, in several phrasings, so text genuinely predicts audio.

Balance: the instrument family cycles with the index, and within each family every other
attribute (and the train/valid/test split) is drawn from seeded permutations in blocks, so
all values and all families appear in every split, whatever the corpus size.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pretty_midi
import soundfile as sf

from musictext import storage
from musictext.logs import progress
from musictext.rejects import ItemError, Rejections

SOURCE = "synthetic"
LICENCE = "CC0-1.0 (generated)"
SAMPLE_RATE = 44100
SOUNDFONT_ENV = "MUSICTEXT_SOUNDFONT"
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
SOUNDFONT_PACKAGE = "timgm6mb-soundfont"
FLUIDSYNTH_PACKAGE = "fluidsynth"
FLUIDSYNTH_GAIN = 1.0  # loud clips peak near -1 dBFS, soft ones sit ~15 dB lower
SILENT_RENDER_PEAK = 1e-4  # -80 dBFS: a render this quiet means the instrument produced nothing
N_CAPTIONS = 4
MIN_SECONDS, MAX_SECONDS = 6.0, 10.0

# Seeds of the independent random streams; fixed so outputs never depend on call order.
_SALT_SPLIT, _SALT_ATTR, _SALT_CLIP, _SALT_MUSIC, _SALT_TEXT = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Family:
    name: str
    program: int  # General MIDI program, 0-based
    center: int  # MIDI pitch at the middle of the family's mid register
    polyphonic: bool  # plays its own chords/arpeggios under the melody
    nouns: tuple[str, ...]  # caption synonyms; each contains the family's core word


FAMILIES: tuple[Family, ...] = (
    Family("piano", 0, 64, True, ("piano", "grand piano", "acoustic piano")),
    Family("strings", 48, 64, True, ("strings", "string ensemble", "string section")),
    Family("brass", 61, 60, True, ("brass", "brass section", "brass ensemble")),
    Family("flute", 73, 76, False, ("flute", "solo flute", "wooden flute")),
    Family("guitar", 24, 60, True, ("nylon guitar", "acoustic guitar", "classical guitar")),
    Family("organ", 19, 64, True, ("organ", "church organ", "pipe organ")),
    Family("synth lead", 80, 70, False, ("synth lead", "square-wave lead", "lead synthesizer")),
    Family("synth pad", 89, 64, True, ("synth pad", "warm pad", "ambient pad")),
    Family("bass", 33, 40, False, ("bass", "electric bass", "bass guitar")),
    Family("marimba", 12, 70, True, ("marimba", "wooden marimba", "mallet marimba")),
    Family("choir", 52, 64, True, ("choir", "vocal choir", "choir of voices")),
)
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}

TEMPI = {"slow": (60, 76), "medium": (90, 112), "fast": (132, 160)}  # BPM ranges
REGISTERS = {"low": -12, "mid": 0, "high": 12}  # semitone shift from the family centre
MODES = ("major", "minor")
DYNAMICS = {"soft": (44, 58), "loud": (100, 116)}  # MIDI velocity ranges
ARTICULATIONS = ("legato", "staccato")
DRUMS = (False, True)
# Per family, every 10 consecutive occurrences give 7 train, 1 valid, 2 test: ~80 held-out clips
# of 400, so retrieval metrics are not decided by a handful of items.
SPLIT_SLOTS = ("train",) * 7 + ("valid",) + ("test",) * 2

# Keys spelt the conventional way for each mode, indexed by tonic pitch class.
_MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
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

# Caption vocabulary.
_TEMPO_WORDS = {
    "slow": ("slow", "unhurried", "leisurely"),
    "medium": ("moderate", "mid-tempo", "steady"),
    "fast": ("fast", "quick", "brisk", "up-tempo"),
}
_REGISTER_WORDS = {
    "low": ("low", "deep", "low-pitched"),
    "mid": ("middle", "mid-range", "medium-pitched"),
    "high": ("high", "high-pitched", "upper"),
}
_DYNAMIC_WORDS = {
    "soft": ("soft", "quiet", "gentle", "delicate"),
    "loud": ("loud", "powerful", "forceful", "intense"),
}
_ARTICULATION_WORDS = {
    "legato": ("legato", "smooth", "flowing", "connected"),
    "staccato": ("staccato", "short, detached", "choppy", "clipped"),
}
_DRUM_WORDS = {
    True: ("with drums", "with a drum kit", "over a steady drum beat", "with a backing drum groove"),
    False: ("no drums", "without drums", "without percussion", "with no percussion"),
}
_DRUM_LEADS = {
    True: ("Backed by drums,", "Over a steady drum beat,", "With a drum kit behind it,"),
    False: ("Without any percussion,", "With no drums,", "Unaccompanied by drums,"),
}
_MOODS = {
    ("minor", "slow"): ("sad", "melancholic", "somber", "mournful"),
    ("minor", "medium"): ("wistful", "moody", "brooding"),
    ("minor", "fast"): ("tense", "dramatic", "urgent", "dark"),
    ("major", "slow"): ("calm", "peaceful", "tender", "serene"),
    ("major", "medium"): ("pleasant", "warm", "bright", "content"),
    ("major", "fast"): ("happy", "cheerful", "upbeat", "joyful"),
}
_PIECES = ("melody", "piece", "tune", "theme")

VOCABULARY = {
    "tempo": _TEMPO_WORDS,
    "register": _REGISTER_WORDS,
    "dynamics": _DYNAMIC_WORDS,
    "articulation": _ARTICULATION_WORDS,
    "drums": _DRUM_WORDS,
    "mood": _MOODS,
}


@dataclass(frozen=True)
class ClipSpec:
    """The attributes of one synthetic clip: everything its sound and its captions follow."""

    seed: int
    index: int
    track_id: str
    split: str
    family: str
    tempo: str
    bpm: int
    register: str
    mode: str
    tonic: int  # pitch class 0-11
    key: str  # e.g. "A minor"
    dynamics: str
    articulation: str
    drums: bool
    duration_s: float

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- attributes


def track_id_for(seed: int, index: int) -> str:
    return f"{SOURCE}-s{seed}-{index:06d}"


def _block_choice(seed: int, salt: int, family: int, occurrence: int, values: tuple):
    """Pick values[...] so every run of len(values) occurrences uses each value once."""
    k = len(values)
    block, slot = divmod(occurrence, k)
    perm = np.random.default_rng([seed, salt, family, block]).permutation(k)
    return values[int(perm[slot])]


def _split_for(seed: int, family: int, occurrence: int) -> str:
    return _block_choice(seed, _SALT_SPLIT, family, occurrence, SPLIT_SLOTS)


def make_spec(seed: int, index: int) -> ClipSpec:
    """The attributes of clip ``index`` of the corpus generated with ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed} index={index}")
    fam_i, occurrence = index % len(FAMILIES), index // len(FAMILIES)

    def pick(attr: int, values: tuple):
        return _block_choice(seed, _SALT_ATTR + 100 * attr, fam_i, occurrence, values)

    tempo = pick(1, tuple(TEMPI))
    mode = pick(3, MODES)
    rng = np.random.default_rng([seed, _SALT_CLIP, index])
    lo, hi = TEMPI[tempo]
    tonic = int(rng.integers(12))
    names = _MAJOR_NAMES if mode == "major" else _MINOR_NAMES
    return ClipSpec(
        seed=seed,
        index=index,
        track_id=track_id_for(seed, index),
        split=_split_for(seed, fam_i, occurrence),
        family=FAMILIES[fam_i].name,
        tempo=tempo,
        bpm=int(rng.integers(lo, hi + 1)),
        register=pick(2, tuple(REGISTERS)),
        mode=mode,
        tonic=tonic,
        key=f"{names[tonic]} {mode}",
        dynamics=pick(4, tuple(DYNAMICS)),
        articulation=pick(5, ARTICULATIONS),
        drums=pick(6, DRUMS),
        duration_s=round(float(rng.uniform(MIN_SECONDS, MAX_SECONDS)), 1),
    )


# ----------------------------------------------------------------------------- captions


def _caption_words(spec: ClipSpec, rng: np.random.Generator) -> dict:
    def one(options):
        return str(options[int(rng.integers(len(options)))])

    return {
        "inst": one(FAMILY_BY_NAME[spec.family].nouns),
        "tempo": one(_TEMPO_WORDS[spec.tempo]),
        "bpm": spec.bpm,
        "mood": one(_MOODS[(spec.mode, spec.tempo)]),
        "key": spec.key,
        "mode": spec.mode,
        "reg": one(_REGISTER_WORDS[spec.register]),
        "dyn": one(_DYNAMIC_WORDS[spec.dynamics]),
        "art": one(_ARTICULATION_WORDS[spec.articulation]),
        "drums": one(_DRUM_WORDS[spec.drums]),
        "drums_lead": one(_DRUM_LEADS[spec.drums]),
        "drums_tag": "drums" if spec.drums else "no drums",
        "piece": one(_PIECES),
    }


# Every template names all seven attributes (family, tempo, register, mode or key, dynamics,
# articulation, drums), in different orders and registers of speech.
_TEMPLATES = (
    "{tempo} {mood} {inst} {piece} in {key}, {dyn} and {art}, {reg} register, {drums}",
    "A {dyn}, {mood} {inst} {piece} in a {mode} key at {bpm} BPM, {art} notes in the {reg} "
    "register, {drums}.",
    "{Inst} in {key} at a {tempo} {bpm} BPM: {art} lines in a {reg} register, {dyn} dynamics, "
    "{drums}.",
    "{inst}, {mode}, {tempo}, {bpm} bpm, {reg} register, {dyn}, {art}, {drums_tag}",
    "{drums_lead} this {tempo} {mode}-key {inst} music sounds {mood}; the notes are {art} and "
    "{dyn}, sitting in a {reg} register.",
    "Instrumental {mood} music for {inst} {drums}, {tempo} pace around {bpm} BPM, played in a "
    "{reg} register with {art} phrasing and {dyn} volume, key of {key}.",
)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def captions_for(spec: ClipSpec, n: int = N_CAPTIONS) -> list[str]:
    """``n`` distinct phrasings (different templates and synonyms) of the clip's attributes."""
    rng = np.random.default_rng([spec.seed, _SALT_TEXT, spec.index])
    order = rng.permutation(len(_TEMPLATES))[: min(n, len(_TEMPLATES))]
    out = []
    for t in order:
        words = _caption_words(spec, rng)
        words["Inst"] = _capitalise(words["inst"])
        text = _TEMPLATES[int(t)].format(**words)
        # Templates 0 and 3 stay lower-case, like tag-style captions found in the wild.
        out.append(text if int(t) in (0, 3) else _capitalise(text))
    return out


def tags_for(spec: ClipSpec) -> list[str]:
    return [
        spec.family,
        spec.tempo,
        f"{spec.register} register",
        spec.mode,
        spec.key.lower(),
        spec.dynamics,
        spec.articulation,
        "drums" if spec.drums else "no drums",
        _MOODS[(spec.mode, spec.tempo)][0],
    ]


# ----------------------------------------------------------------------------- music


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


def _trim(pm: pretty_midi.PrettyMIDI, duration: float) -> None:
    """Drop notes starting in the last 50 ms and cut the rest at the clip end."""
    for inst in pm.instruments:
        inst.notes = [
            pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, duration))
            for n in inst.notes
            if n.start < duration - 0.05
        ]


def build_midi(spec: ClipSpec) -> pretty_midi.PrettyMIDI:
    """A chord progression in the key plus a melody (and drums) that follow the spec."""
    rng = np.random.default_rng([spec.seed, _SALT_MUSIC, spec.index])
    family = FAMILY_BY_NAME[spec.family]
    intervals = _INTERVALS[spec.mode]
    progressions = _PROGRESSIONS[spec.mode]
    progression = progressions[int(rng.integers(len(progressions)))]
    n_bars = math.ceil(spec.duration_s / (240.0 / spec.bpm)) + 1
    chords = [progression[b % len(progression)] for b in range(n_bars)]
    lo, hi = DYNAMICS[spec.dynamics]
    vel = int(rng.integers(lo, hi + 1))
    base = _tonic_base(spec)

    pm = pretty_midi.PrettyMIDI(initial_tempo=float(spec.bpm))
    inst = pretty_midi.Instrument(program=family.program, name=family.name)
    _melody(spec, inst, chords, base, intervals, vel, rng)
    if family.polyphonic:
        _accompaniment(spec, inst, chords, base, intervals, vel - 14, rng)
    pm.instruments.append(inst)
    if spec.drums:
        pm.instruments.append(_drum_part(spec, n_bars, vel, rng))
    _trim(pm, spec.duration_s)
    return pm


# ----------------------------------------------------------------------------- rendering


def find_soundfont() -> str:
    """$MUSICTEXT_SOUNDFONT, else the Debian TimGM6mb soundfont (small, so renders are fast)."""
    path = os.environ.get(SOUNDFONT_ENV) or DEFAULT_SOUNDFONT
    if not os.path.isfile(path):
        raise RuntimeError(
            f"soundfont {path} not found: install the Debian package '{SOUNDFONT_PACKAGE}' "
            f"(apt-get install -y {SOUNDFONT_PACKAGE}) or point ${SOUNDFONT_ENV} at a .sf2 file"
        )
    return path


def find_fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RuntimeError(
            f"the fluidsynth program is not on PATH: install the Debian package "
            f"'{FLUIDSYNTH_PACKAGE}' (apt-get install -y {FLUIDSYNTH_PACKAGE})"
        )
    return exe


def check_renderer() -> tuple[str, str]:
    """Fail early, with the apt package to install, instead of rejecting every clip."""
    return find_fluidsynth(), find_soundfont()


def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad to exactly ``n`` samples, with a 30 ms fade so the cut does not click."""
    out = np.zeros(n, dtype=np.float32)
    m = min(n, len(audio))
    out[:m] = audio[:m]
    fade = min(int(0.03 * SAMPLE_RATE), n)
    out[n - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def render(spec: ClipSpec, fluidsynth: str | None = None, soundfont: str | None = None) -> np.ndarray:
    """Mono float32 audio at 44.1 kHz, exactly ``spec.duration_s`` long."""
    if fluidsynth is None or soundfont is None:
        fluidsynth, soundfont = check_renderer()
    with tempfile.TemporaryDirectory(prefix="musictext-render-") as tmp:
        mid, wav = os.path.join(tmp, "clip.mid"), os.path.join(tmp, "clip.wav")
        build_midi(spec).write(mid)
        # -ni: no MIDI input, no shell; -F renders the file faster than real time.
        cmd = [fluidsynth, "-ni", "-q", "-g", str(FLUIDSYNTH_GAIN), "-r", str(SAMPLE_RATE),
               "-F", wav, soundfont, mid]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not os.path.exists(wav):
            detail = proc.stderr.strip()[-300:]
            raise ItemError(spec.track_id, f"fluidsynth failed (rc={proc.returncode}): {detail}")
        stereo, rate = sf.read(wav, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ItemError(spec.track_id, f"fluidsynth wrote {rate} Hz, expected {SAMPLE_RATE}")
    audio = _fit_length(stereo.mean(axis=1), int(round(spec.duration_s * SAMPLE_RATE)))
    peak = float(np.abs(audio).max())
    if peak < SILENT_RENDER_PEAK:
        raise ItemError(spec.track_id, f"rendered silence (peak {peak:.2e})")
    if peak > 0.99:  # a dense loud clip: scale down rather than clip
        audio *= 0.99 / peak
    return audio


def wav_bytes(audio: np.ndarray) -> bytes:
    """Mono 16-bit WAV: what a downloaded source file looks like, at half the float size."""
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


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


# ----------------------------------------------------------------------------- source handler


def render_workers() -> int:
    """Parallel fluidsynth processes: $MUSICTEXT_WORKERS, else one per CPU (max 8)."""
    env = os.environ.get("MUSICTEXT_WORKERS")
    return max(1, int(env)) if env else min(os.cpu_count() or 1, 8)


class SyntheticSource:
    """Source handler: shards are index ranges; 'downloading' renders them here."""

    name = SOURCE

    def plan_shards(self, corpus_size: int, shard_size: int, seed: int) -> list[dict]:
        from musictext.ingest.registry import even_shards

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
