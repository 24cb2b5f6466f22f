"""Caption cleaning: the same rules at training time (text stage) and at query time (TextEmbedder).

Cleaning is linear in the text and its input is capped, so one pathological caption (a scraped
page, a markup bomb) costs at most a few milliseconds:
- ``MAX_CAPTION_CHARS``: a training caption is cut to this many characters *before* cleaning.
  Real captions are a few sentences and the text tower reads only ``max_length`` tokens (64 by
  default, about 300 characters), so the cap never cuts words a model would see; it only bounds
  the work per caption.
- ``MAX_QUERY_CHARS``: a query longer than this is refused (``clean_query``), not cut: a user
  should learn that their text was not read whole. The text service checks it before cleaning.
"""

from __future__ import annotations

import html
import re
import unicodedata

MAX_CAPTION_CHARS = 32_768
MAX_QUERY_CHARS = 2_000

# Only things shaped like real markup: "a < b > c" or "<3" in a caption is left alone.
_TAG = r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>"
_MARKUP = re.compile(r"<!--.*?-->|" + _TAG, re.DOTALL)
_TAG_ONLY = re.compile(_TAG)
_COMMENT_END = "-->"
_SPACE = re.compile(r"\s+")
# A decimal character reference longer than any code point (9+ digits). html.unescape parses it
# with int(), which refuses more than 4,300 digits (CPython's guard) and would raise.
_LONG_DECIMAL_REF = re.compile(r"&#([0-9]{9,})")
_BEYOND_UNICODE = "999999999"  # > 0x10FFFF: html.unescape makes it U+FFFD, as any such reference
# Unicode categories removed outright: format (zero-width, BOM, bidi), private use,
# surrogates, unassigned. Control characters (Cc, incl. tab/newline) become spaces instead.
_DROP = {"Cf", "Co", "Cs", "Cn"}


def _short_reference(match: re.Match) -> str:
    digits = match.group(1).lstrip("0") or "0"  # leading zeros do not change the character
    return "&#" + (digits if len(digits) < len(_BEYOND_UNICODE) else _BEYOND_UNICODE)


def _unescape(text: str) -> str:
    # Two passes undo the double escaping ("&amp;lt;b&amp;gt;") that scraped text often has.
    for _ in range(2):
        text = html.unescape(_LONG_DECIMAL_REF.sub(_short_reference, text))
    return text


def strip_markup(text: str) -> str:
    """Comments and tags replaced by a space, in time linear in the text.

    An unclosed ``<!--`` makes ``<!--.*?-->`` scan to the end of the text, once per ``<!--``:
    quadratic in a text full of them. A comment can only end at the last ``-->`` or before it, so
    the comment rule runs on the text up to there (where every ``<!--`` but the last few finds its
    end) and only the tag rule after it. No match crosses that point: it follows a ``>``, which
    ends any tag, so the result is that of ``_MARKUP`` on the whole text.
    """
    last = text.rfind(_COMMENT_END)
    end = 0 if last < 0 else last + len(_COMMENT_END)
    return _MARKUP.sub(" ", text[:end]) + _TAG_ONLY.sub(" ", text[end:])


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
    """HTML entities and tags out, NFKC, no control characters, single spaces, stripped.

    Only the first ``MAX_CAPTION_CHARS`` characters are read."""
    if not isinstance(text, str):
        return ""
    text = strip_markup(_unescape(text[:MAX_CAPTION_CHARS]))
    text = _strip_controls(unicodedata.normalize("NFKC", text))
    text = _SPACE.sub(" ", text).strip()
    return text.lower() if lowercase else text


def check_query(text: str) -> str:
    """``text`` itself, or ValueError when it is longer than ``MAX_QUERY_CHARS`` (checked before any
    cleaning, so an oversized query costs nothing)."""
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"query is {len(text):,} characters; at most {MAX_QUERY_CHARS:,} are accepted")
    return text


def clean_query(text: str, lowercase: bool) -> str:
    """A query cleaned like a caption; ValueError when it is longer than ``MAX_QUERY_CHARS``."""
    return clean_caption(check_query(text), lowercase)
