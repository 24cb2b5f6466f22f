"""The musical attributes of a synthetic clip (``ClipSpec``) and how they are drawn.

The instrument family cycles with the index, and within each family every other attribute
(and the train/valid/test split) is drawn from seeded permutations in blocks, so all values and
all families appear in every split, whatever the corpus size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SOURCE = "synthetic"
MIN_SECONDS, MAX_SECONDS = 6.0, 10.0

# Seeds of the independent random streams; fixed so outputs never depend on call order.
# All here, captions and MIDI included, so no two streams can share a salt by accident.
SALT_SPLIT, SALT_ATTR, SALT_CLIP, SALT_MUSIC, SALT_TEXT = 1, 2, 3, 4, 5
SALT_SONG_SPLIT, SALT_SONG, SALT_SONG_MUSIC, SALT_SONG_TEXT = 11, 12, 14, 15


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
TEMPO_ORDER = tuple(TEMPI)  # slow < medium < fast
DRUMS = (False, True)
# Per family, every 10 consecutive occurrences give 7 train, 1 valid, 2 test: ~80 held-out clips
# of 400, so retrieval metrics are not decided by a handful of items.
SPLIT_SLOTS = ("train",) * 7 + ("valid",) + ("test",) * 2

# Keys spelt the conventional way for each mode, indexed by tonic pitch class.
_MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")


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


def track_id_for(seed: int, index: int) -> str:
    return f"{SOURCE}-s{seed}-{index:06d}"


def _block_choice(seed: int, salt: int, family: int, occurrence: int, values: tuple):
    """Pick values[...] so every run of len(values) occurrences uses each value once."""
    k = len(values)
    block, slot = divmod(occurrence, k)
    perm = np.random.default_rng([seed, salt, family, block]).permutation(k)
    return values[int(perm[slot])]


def _split_for(seed: int, family: int, occurrence: int) -> str:
    return _block_choice(seed, SALT_SPLIT, family, occurrence, SPLIT_SLOTS)


def make_spec(seed: int, index: int) -> ClipSpec:
    """The attributes of clip ``index`` of the corpus generated with ``seed``."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed} index={index}")
    fam_i, occurrence = index % len(FAMILIES), index // len(FAMILIES)

    def pick(attr: int, values: tuple):
        return _block_choice(seed, SALT_ATTR + 100 * attr, fam_i, occurrence, values)

    tempo = pick(1, tuple(TEMPI))
    mode = pick(3, MODES)
    rng = np.random.default_rng([seed, SALT_CLIP, index])
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


# ----------------------------------------------------------------------------- full songs

# Full songs: 2-4 sections; each section after the first changes one or two of these.
SONG_SECTIONS = (2, 4)
SONG_CHANGES = ("family", "tempo", "dynamics", "drums")
# Section lengths vary within this factor of an even share, so no section is a mere fragment.
SECTION_SPREAD = (0.75, 1.25)
MIN_SONG_SECONDS = 10.0  # the shortest song length an option may ask for
# One listed item in SONG_SHARE is a full song by default (``source.SyntheticOptions``). Song j's
# track id sorts right after short piece (j + 1) * SONG_SHARE - 1, so the listing, which cuts
# shards in track-id order, spreads the songs' long renders over the shards.
SONG_SHARE = 12


@dataclass(frozen=True)
class SongSpec:
    """A full song: sections played one after another in one key, register and articulation,
    each a ClipSpec (its ``duration_s`` the section's length) whose family, tempo, dynamics or
    drums differ from the section before."""

    seed: int
    index: int
    track_id: str
    split: str
    key: str
    mode: str
    sections: tuple[ClipSpec, ...]

    @property
    def duration_s(self) -> float:
        return round(sum(s.duration_s for s in self.sections), 1)

    @property
    def starts(self) -> tuple[float, ...]:
        """Start time of every section, in seconds."""
        ends = np.cumsum([0.0] + [s.duration_s for s in self.sections])
        return tuple(round(float(t), 1) for t in ends[:-1])

    def changes(self, k: int) -> tuple[str, ...]:
        """The SONG_CHANGES attributes in which section ``k`` differs from section ``k - 1``."""
        if k == 0:
            return ()
        a, b = self.sections[k - 1], self.sections[k]
        return tuple(c for c in SONG_CHANGES if getattr(a, c) != getattr(b, c))

    def to_dict(self) -> dict:
        return asdict(self)


def song_track_id(seed: int, index: int) -> str:
    return f"{SOURCE}-s{seed}-{(index + 1) * SONG_SHARE - 1:06d}-song"


def _section_lengths(rng: np.random.Generator, n: int, total: float) -> list[float]:
    """``n`` lengths (0.1 s steps) near an even share of ``total``, summing to it."""
    weights = rng.uniform(*SECTION_SPREAD, size=n)
    lengths = [round(float(w), 1) for w in weights / weights.sum() * total]
    lengths[-1] = round(total - sum(lengths[:-1]), 1)
    return lengths


def _changed(rng: np.random.Generator, prev: dict, attrs: tuple[str, ...]) -> dict:
    """``prev`` with each attribute in ``attrs`` set to a different value."""
    out = dict(prev)
    for attr in attrs:
        if attr == "family":
            others = [f.name for f in FAMILIES if f.name != prev["family"]]
            out["family"] = others[int(rng.integers(len(others)))]
        elif attr == "tempo":
            out["tempo"] = str(rng.choice([t for t in TEMPO_ORDER if t != prev["tempo"]]))
        elif attr == "dynamics":
            out["dynamics"] = "loud" if prev["dynamics"] == "soft" else "soft"
        else:
            out["drums"] = not prev["drums"]
    return out


def make_song_spec(seed: int, index: int, min_seconds: float = 60.0, max_seconds: float = 120.0) -> SongSpec:
    """Full song ``index`` of the corpus generated with ``seed``, ``min_seconds`` to
    ``max_seconds`` long. The first section's family cycles with the index, so every family
    opens songs; splits come in blocks of 10 songs like the short pieces'."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed} index={index}")
    if not MIN_SONG_SECONDS <= min_seconds <= max_seconds:
        raise ValueError(f"song length must satisfy {MIN_SONG_SECONDS} <= min_seconds <= max_seconds, "
                         f"got {min_seconds}, {max_seconds}")
    rng = np.random.default_rng([seed, SALT_SONG, index])
    n = int(rng.integers(SONG_SECTIONS[0], SONG_SECTIONS[1] + 1))
    lengths = _section_lengths(rng, n, round(float(rng.uniform(min_seconds, max_seconds)), 1))
    mode = str(rng.choice(MODES))
    tonic = int(rng.integers(12))
    key = f"{(_MAJOR_NAMES if mode == 'major' else _MINOR_NAMES)[tonic]} {mode}"
    track_id = song_track_id(seed, index)
    split = _block_choice(seed, SALT_SONG_SPLIT, 0, index, SPLIT_SLOTS)
    state = {
        "family": FAMILIES[index % len(FAMILIES)].name,
        "tempo": str(rng.choice(TEMPO_ORDER)),
        "register": str(rng.choice(tuple(REGISTERS))),
        "dynamics": str(rng.choice(tuple(DYNAMICS))),
        "articulation": str(rng.choice(ARTICULATIONS)),
        "drums": bool(rng.integers(2)),
    }
    sections = []
    for k, length in enumerate(lengths):
        if k:
            picked = rng.choice(len(SONG_CHANGES), size=int(rng.integers(1, 3)), replace=False)
            state = _changed(rng, state, tuple(SONG_CHANGES[int(i)] for i in sorted(picked)))
        lo, hi = TEMPI[state["tempo"]]
        sections.append(ClipSpec(
            seed=seed, index=index, track_id=track_id, split=split, bpm=int(rng.integers(lo, hi + 1)),
            mode=mode, tonic=tonic, key=key, duration_s=length, **state,
        ))
    return SongSpec(seed=seed, index=index, track_id=track_id, split=split, key=key, mode=mode,
                    sections=tuple(sections))
