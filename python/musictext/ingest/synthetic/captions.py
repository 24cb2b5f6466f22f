"""Caption phrasings and tags of a synthetic clip, from the attributes that shape its sound."""

from __future__ import annotations

import numpy as np

from musictext.ingest.synthetic.attributes import FAMILY_BY_NAME, SALT_TEXT, ClipSpec

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
