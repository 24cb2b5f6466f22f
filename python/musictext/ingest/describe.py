"""Sentences built from tags and labels, for datasets without written captions.

A raw tag list ("genre---rock instrument---guitar") is not how anyone types a query, so tags
are sorted into facets (genre, instrument, mood, other) and written as sentences in several
phrasings. The phrasing is chosen by a hash of the item, so a record's captions are stable
across runs while the corpus as a whole sees every template.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

FACETS = ("genre", "mood", "instrument", "tempo", "other")


@dataclass
class Facets:
    """Tags of one item, by facet, in order of importance (the first ones are named first)."""

    genre: list[str] = field(default_factory=list)
    mood: list[str] = field(default_factory=list)
    instrument: list[str] = field(default_factory=list)
    tempo: list[str] = field(default_factory=list)  # "slow", "120 bpm"
    other: list[str] = field(default_factory=list)  # anything else worth saying ("live", "lo-fi")

    def empty(self) -> bool:
        return not any(getattr(self, f) for f in FACETS)

    def all_tags(self) -> list[str]:
        return [t for f in FACETS for t in getattr(self, f)]


def join_words(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    words = [w for w in words if w]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _pick(key: str, salt: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:4], "big") % n


def _core(f: Facets, limit: int = 3) -> dict[str, str]:
    return {
        "genre": join_words(f.genre[:limit]),
        "mood": join_words(f.mood[:limit]),
        "instrument": join_words(f.instrument[:limit]),
        "tempo": join_words(f.tempo[:2]),
        "other": join_words(f.other[:limit]),
    }


def _sentence_a(c: dict[str, str]) -> str:
    # "A calm, sad jazz track with piano and double bass."
    head = " ".join(x for x in (c["mood"].replace(" and ", ", "), c["genre"]) if x)
    text = _article(f"{head} track") if head else "A track"
    if c["instrument"]:
        text += f" with {c['instrument']}"
    if c["tempo"]:
        text += f", {c['tempo']}"
    if c["other"]:
        text += f" ({c['other']})"
    return text[0].upper() + text[1:] + "."


def _sentence_b(c: dict[str, str]) -> str:
    # "Jazz music featuring piano. The mood is calm and sad."
    parts = []
    if c["genre"] or c["instrument"]:
        lead = f"{c['genre']} music" if c["genre"] else "Music"
        if c["instrument"]:
            lead += f" featuring {c['instrument']}"
        parts.append(lead[0].upper() + lead[1:] + ".")
    if c["mood"]:
        parts.append(f"The mood is {c['mood']}.")
    if c["tempo"]:
        parts.append(f"The tempo is {c['tempo']}.")
    if c["other"]:
        parts.append(f"It is {c['other']}.")
    return " ".join(parts)


def _sentence_c(c: dict[str, str]) -> str:
    # "The sound of piano in a calm jazz piece."
    if c["instrument"]:
        text = f"The sound of {c['instrument']}"
        rest = " ".join(x for x in (c["mood"].replace(" and ", ", "), c["genre"]) if x)
        text += f" in {_article(rest + ' piece')}" if rest else ""
    else:
        rest = " ".join(x for x in (c["mood"].replace(" and ", ", "), c["genre"]) if x)
        text = f"This is {_article(rest + ' song')}" if rest else "This is a song"
    if c["other"]:
        text += f", {c['other']}"
    return text[0].upper() + text[1:] + "."


TEMPLATES = (_sentence_a, _sentence_b, _sentence_c)


def describe(facets: Facets, key: str, n: int = 2) -> list[str]:
    """``n`` different sentences (at most len(TEMPLATES)) describing ``facets``; [] if empty.

    ``key`` (the item's id) picks which templates and the order, so one item's captions are
    stable and the corpus covers every phrasing.
    """
    if facets.empty():
        return []
    c = _core(facets)
    first = _pick(key, "template", len(TEMPLATES))
    out: list[str] = []
    for i in range(len(TEMPLATES)):
        sentence = TEMPLATES[(first + i) % len(TEMPLATES)](c).strip()
        if sentence and sentence not in out:
            out.append(sentence)
        if len(out) == n:
            break
    return out
