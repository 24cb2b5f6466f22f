"""Caption cleaning: the same rules at training time (text stage) and at query time (TextEmbedder)."""

from __future__ import annotations

import html
import re
import unicodedata

# Only things shaped like real markup: "a < b > c" or "<3" in a caption is left alone.
_MARKUP = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>", re.DOTALL)
_SPACE = re.compile(r"\s+")
# Unicode categories removed outright: format (zero-width, BOM, bidi), private use,
# surrogates, unassigned. Control characters (Cc, incl. tab/newline) become spaces instead.
_DROP = {"Cf", "Co", "Cs", "Cn"}


def _unescape(text: str) -> str:
    # Two passes undo the double escaping ("&amp;lt;b&amp;gt;") that scraped text often has.
    for _ in range(2):
        text = html.unescape(text)
    return text


def _strip_controls(text: str) -> str:
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cc":
            out.append(" ")
        elif cat not in _DROP:
            out.append(ch)
    return "".join(out)


def clean_caption(text: str, lowercase: bool) -> str:
    """HTML entities and tags out, NFKC, no control characters, single spaces, stripped."""
    if not isinstance(text, str):
        return ""
    text = _MARKUP.sub(" ", _unescape(text))
    text = _strip_controls(unicodedata.normalize("NFKC", text))
    text = _SPACE.sub(" ", text).strip()
    return text.lower() if lowercase else text
