"""Caption phrasings and tags of a synthetic clip, from the attributes that shape its sound."""

from __future__ import annotations

import numpy as np

from musictext.ingest.synthetic.attributes import (
    FAMILY_BY_NAME,
    SALT_SONG_TEXT,
    SALT_TEXT,
    SONG_CHANGES,
    TEMPO_ORDER,
    ClipSpec,
    SongSpec,
)

N_CAPTIONS = 4

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
    rng = np.random.default_rng([spec.seed, SALT_TEXT, spec.index])
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


# ----------------------------------------------------------------------------- full songs

# Short words for a section's state, so a four-section caption stays within the text tower's
# 64 tokens.
_SONG_DRUM_WORDS = {True: ("with drums", "drums in"), False: ("no drums", "without drums")}
_TEMPO_CHANGE_WORDS = {
    "up": ("faster", "speeding up", "at a quicker pace", "picking up the tempo"),
    "down": ("slower", "slowing down", "at a calmer pace", "easing the tempo"),
}
_DRUM_CHANGE_WORDS = {
    True: ("with drums coming in", "now over drums", "as a drum beat enters"),
    False: ("with the drums dropping out", "without drums now", "as the percussion stops"),
}
_CHANGE_TAGS = {"family": "instrument change", "tempo": "tempo change", "dynamics": "dynamic change",
                "drums": "drum change"}
_PARTS = {2: "two-part", 3: "three-part", 4: "four-part"}
SONG_VOCABULARY = {"tempo_change": _TEMPO_CHANGE_WORDS, "drum_change": _DRUM_CHANGE_WORDS, **VOCABULARY}


def _one(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _timestamp(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def _article(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


class _Synonyms:
    """Synonyms drawn once per value within one caption, so a repeated instrument or dynamic
    reads as the same one (not "brass section" then "brass ensemble")."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.chosen = rng, {}

    def __call__(self, kind: str, value, options) -> str:
        if (kind, value) not in self.chosen:
            self.chosen[(kind, value)] = _one(self.rng, options)
        return self.chosen[(kind, value)]


def _section_words(song: SongSpec, rng: np.random.Generator) -> list[dict]:
    """Per section: its caption words (``_caption_words``, with one synonym per value) plus
    ``change``, the phrase naming the section's instrument and what differs from the section
    before (the first section's is its instrument alone)."""
    pick = _Synonyms(rng)
    out = []
    for k, section in enumerate(song.sections):
        words = _caption_words(section, rng)
        words["inst"] = pick("inst", section.family, FAMILY_BY_NAME[section.family].nouns)
        words["dyn"] = pick("dyn", section.dynamics, _DYNAMIC_WORDS[section.dynamics])
        words["tempo"] = pick("tempo", section.tempo, _TEMPO_WORDS[section.tempo])
        words["drums"] = pick("drums", section.drums, _SONG_DRUM_WORDS[section.drums])
        changes = song.changes(k)
        dyn = f"{words['dyn']} " if "dynamics" in changes else ""
        tail = []
        if "tempo" in changes:
            before = TEMPO_ORDER.index(song.sections[k - 1].tempo)
            direction = "up" if TEMPO_ORDER.index(section.tempo) > before else "down"
            tail.append(_one(rng, _TEMPO_CHANGE_WORDS[direction]))
        if "drums" in changes:
            tail.append(_one(rng, _DRUM_CHANGE_WORDS[section.drums]))
        words["change"] = ", ".join([f"{dyn}{words['inst']}", *tail])
        out.append(words)
    return out


def _narrative(song: SongSpec, w: list[dict]) -> str:
    first = w[0]
    opening = (f"{_capitalise(_article(first['mood']))} {first['piece']} in {song.key} opens with {first['dyn']} "
               f"{first['art']} {first['inst']} at {first['bpm']} BPM, {first['drums']}")
    middle = "".join(f"; then {x['change']}" for x in w[1:-1])
    return f"{opening}{middle}; and it ends with {w[-1]['change']}."


def _timeline(song: SongSpec, w: list[dict]) -> str:
    """Timestamped states; drums named where they start, stop or first appear."""
    parts = []
    for k, (t, x) in enumerate(zip(song.starts, w)):
        drums = f", {x['drums']}" if k == 0 or "drums" in song.changes(k) else ""
        parts.append(f"{_timestamp(t)} {x['dyn']} {x['inst']}, {x['bpm']} BPM{drums}")
    return f"{song.key}: " + "; ".join(parts)


def _tag_arrows(song: SongSpec, w: list[dict]) -> str:
    """Tag style: each attribute's values in section order (once when it never changes); the
    instruments always one per section."""

    def arrows(key: str, always: bool = False) -> str:
        values = [x[key] for x in w]
        return " -> ".join(values) if always or len(set(values)) > 1 else values[0]

    return (f"full song, {song.key.lower()}, {arrows('inst', always=True)}, {arrows('tempo')}, {arrows('dyn')}, "
            f"{arrows('drums_tag')}")


def _gives_way(song: SongSpec, w: list[dict]) -> str:
    first = w[0]
    then = ", then ".join(x["change"] for x in w[1:])
    return (f"{_capitalise(first['dyn'])} {first['inst']} ({first['tempo']}, {first['drums']}) gives way to "
            f"{then}, in this {_PARTS[len(w)]} {first['mood']} piece in {song.key}.")


def _timed_summary(song: SongSpec, w: list[dict]) -> str:
    first = w[0]
    steps = "".join(f", then {x['change']}" for x in w[1:-1])
    return (f"This {round(song.duration_s)}-second song in {song.key} starts {first['dyn']} on "
            f"{first['inst']} at {first['bpm']} BPM ({first['drums']}){steps}, and finishes with "
            f"{w[-1]['change']}.")


# Every style names each section's instrument, in order, and every change between sections.
_SONG_STYLES = (_narrative, _timeline, _tag_arrows, _gives_way, _timed_summary)


def song_captions_for(song: SongSpec, n: int = N_CAPTIONS) -> list[str]:
    """``n`` phrasings (different styles and synonyms) of the whole song, section by section."""
    rng = np.random.default_rng([song.seed, SALT_SONG_TEXT, song.index])
    order = rng.permutation(len(_SONG_STYLES))[: min(n, len(_SONG_STYLES))]
    return [_SONG_STYLES[int(i)](song, _section_words(song, rng)) for i in order]


def song_tags_for(song: SongSpec) -> list[str]:
    sections = song.sections
    changes = {c for k in range(1, len(sections)) for c in song.changes(k)}
    tags = ["full song", song.mode, song.key.lower(), sections[0].articulation, f"{sections[0].register} register"]
    tags += [s.family for s in sections] + [s.tempo for s in sections] + [s.dynamics for s in sections]
    tags += ["drums" if s.drums else "no drums" for s in sections]
    tags += [_CHANGE_TAGS[c] for c in SONG_CHANGES if c in changes]
    return list(dict.fromkeys(tags))
