"""Caption cleaning is linear in the text and bounded, and gives the same output as before on
real captions. The query length cap is checked before cleaning."""

from __future__ import annotations

import html
import random
import re
import time
import unicodedata

import pytest
from fastapi.testclient import TestClient

from musictext.captions import MAX_CAPTION_CHARS, MAX_QUERY_CHARS, check_query, clean_caption, clean_query
from musictext.serve.app import MAX_TEXT_CHARS, create_app

# ---- the cleaning as it was before it was made linear (commit 51efec7), the reference -------------
_OLD_MARKUP = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>", re.DOTALL)
_OLD_SPACE = re.compile(r"\s+")
_OLD_DROP = {"Cf", "Co", "Cs", "Cn"}


def _old_unescape(text: str) -> str:
    for _ in range(2):
        text = html.unescape(text)
    return text


def _old_strip_controls(text: str) -> str:
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cc":
            out.append(" ")
        elif cat not in _OLD_DROP:
            out.append(ch)
    return "".join(out)


def old_clean_caption(text: str, lowercase: bool) -> str:
    if not isinstance(text, str):
        return ""
    text = _OLD_MARKUP.sub(" ", _old_unescape(text))
    text = _old_strip_controls(unicodedata.normalize("NFKC", text))
    text = _OLD_SPACE.sub(" ", text).strip()
    return text.lower() if lowercase else text


# ---------------------------------------------------------------------------------------------------

REALISTIC = [
    "The low quality recording features a ballad song that contains sustained strings, mellow piano "
    "melody and soft female vocal singing over it. It sounds sad and soulful, like something you "
    "would hear at Sunday services.",
    "This is an instrumental rock music piece. There is an electric guitar playing the melody while "
    "a bass guitar plays in the background. The rhythmic background consists of a rock acoustic "
    "drum beat. The atmosphere is energetic.",
    "  Soft <b>Piano</b>&amp;Strings\n\tpiece ",
    "<p>Formed in 1994 in <a href=\"http://example.org/wiki/Leeds\" target=\"_blank\">Leeds</a>, "
    "the band released three LPs on <i>Warp</i>.</p><br/><p>Their sound: &quot;dub-techno meets "
    "krautrock&quot; &mdash; see https://www.example.com/band?id=12&amp;lang=en</p>",
    "<p><span style=\"font-size: 12px;\">Ambient drone &amp; field recordings</span></p>\r\n<p></p>",
    "&amp;lt;i&amp;gt;Jazz&amp;lt;/i&amp;gt; trio &#39;live&#39; at the Caf&eacute; &#x2014; 1962",
    "tempo < 90 > 60 bpm, i <3 this <!-- hidden --> song<br/>",
    "<!-- multi\nline\ncomment --> Lo-fi hip hop beat <!--x--> with vinyl crackle <!-- unclosed",
    "ﬁne Ｍｕｓｉｃ pi\u200bano\ufeff  solo, jazz\u00a0trio, a\x00b\x07c\r\nd",
    "Visit <a href='https://soundcloud.com/artist/track-1'>SoundCloud</a> or http://x.y/z?a=<b>&c=d",
    "<div class=\"bio\">\n  <h2>Biography</h2>\n  <ul><li>guitar</li><li>vocals</li></ul>\n</div>",
    "A <3-minute song with a > b comparisons and <<double>> brackets, < spaced > and <a",
    "Kid A's «Idioteque» — 4/4, 137 BPM; Ωmega & Ελληνικά; 日本語のキャプション; emoji 🎹🎻",
    "<br><br/><br /><hr/><img src=x onerror=alert(1)><svg:rect x:y='1'/>",
    "&nbsp;&nbsp;&lt;3&nbsp;&gt;&#0;&#65;&#x41;&#1114111;&#1114112;&#55296;&bogus;&amp",
    "\u2028\u2029 \t",
    "",
]


@pytest.mark.parametrize("lowercase", [False, True])
def test_same_output_as_before_on_real_captions(lowercase):
    for text in REALISTIC:
        assert clean_caption(text, lowercase) == old_clean_caption(text, lowercase), text


FRAGMENTS = ["<!--", "-->", "--", "<", ">", "/", "<b>", "</b>", "<a href='u'>", "<a ", "<br/>", "<x:y z",
             "&amp;", "&lt;", "&#65;", "&#x3c;", "&", "#", ";", " ", "\n", "\t", "piano", "é", "\u200b",
             "http://a.b/?q=1&r=2", "<3", "!", "-", "a", "Z9"]


def test_same_output_as_before_on_random_markup():
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 40)))
        assert clean_caption(text, False) == old_clean_caption(text, False), repr(text)


def adversarial(n_chars: int, seed: int = 0) -> str:
    """Unclosed comments (what was quadratic) mixed with random markup, ``n_chars`` long."""
    rng = random.Random(seed)
    noise = [f for f in FRAGMENTS if f != "-->"]
    parts, size = [], 0
    while size < n_chars:
        part = "<!--" if rng.random() < 0.6 else rng.choice(noise)
        parts.append(part)
        size += len(part)
    return "".join(parts)[:n_chars]


def test_adversarial_shapes_match_the_old_cleaning():
    # Small enough for the old, quadratic cleaning to finish quickly.
    for seed in range(5):
        text = adversarial(1500, seed)
        for variant in (text, "a -->" + text, text + " -->", text[:700] + "-->" + text[700:]):
            assert clean_caption(variant, False) == old_clean_caption(variant, False)


def _best_seconds(fn, text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(text, False)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("shape", ["comments", "comments+close", "tags"])
def test_32kb_adversarial_caption_is_cleaned_fast(shape):
    text = {"comments": adversarial(32 * 1024), "comments+close": "-->" + adversarial(32 * 1024 - 6) + "-->",
            "tags": ("<a " * 11000)[: 32 * 1024]}[shape]
    assert len(text) <= MAX_CAPTION_CHARS  # cleaned whole, not truncated
    seconds = _best_seconds(clean_caption, text)
    print(f"32 KB adversarial caption ({shape}): cleaned in {seconds * 1000:.1f} ms")
    assert seconds < 0.05  # a guard only: the old cleaning took ~2.7 s on the "comments" shape here


def test_old_cleaning_was_quadratic():
    # The guard above can fail: the reference needs far longer on a quarter of the text.
    seconds = _best_seconds(old_clean_caption, "<!--" * 2048, repeats=1)
    print(f"old cleaning, 8 KB of unclosed comments: {seconds * 1000:.0f} ms")
    assert seconds > 0.05


def test_long_caption_is_truncated_before_cleaning():
    text = "<b>loud</b> guitar &amp; drums " * 3000
    assert len(text) > MAX_CAPTION_CHARS
    assert clean_caption(text, True) == clean_caption(text[:MAX_CAPTION_CHARS], True)
    assert len(clean_caption(text, True)) < MAX_CAPTION_CHARS


def test_huge_numeric_reference_does_not_crash():
    # int() refuses more than 4,300 digits, so html.unescape raised on these before.
    for ref in ("&#" + "9" * 5000 + ";", "&#" + "0" * 5000 + "65;", "&amp;#" + "1" * 6000):
        with pytest.raises(ValueError):
            old_clean_caption("piano " + ref, False)
    assert clean_caption("piano &#" + "9" * 5000 + "; solo", False) == "piano \ufffd solo"
    assert clean_caption("piano &#" + "0" * 5000 + "65; solo", False) == "piano A solo"
    assert clean_caption("piano &amp;#" + "1" * 6000, False) == "piano \ufffd"
    # Short ones are untouched: the same as before.
    for ref in ("&#000000065;", "&#99999999;", "&#000000000;", "&#123456789", "&#x0000000041;"):
        assert clean_caption(ref, False) == old_clean_caption(ref, False)


def test_query_over_the_cap_is_refused():
    assert clean_query("slow sad piano", True) == "slow sad piano"
    assert check_query("x" * MAX_QUERY_CHARS) == "x" * MAX_QUERY_CHARS
    with pytest.raises(ValueError, match=f"query is 2,001 characters; at most {MAX_QUERY_CHARS:,}"):
        clean_query("x" * (MAX_QUERY_CHARS + 1), True)


def test_service_refuses_a_long_query_before_cleaning_it():
    # Markup only: were it cleaned first, the error would be "no words"; the length error comes alone.
    client = TestClient(create_app({}))
    reply = client.post("/embed_text", json={"text": "<b>" * (MAX_TEXT_CHARS // 3 + 1), "model": "muq"})
    assert reply.status_code == 422
    [error] = reply.json()["detail"]
    assert error["type"] == "string_too_long", error
    short = client.post("/embed_text", json={"text": "<b></b>", "model": "muq"})
    assert short.status_code == 422 and "no words" in short.text
