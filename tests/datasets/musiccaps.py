"""A tiny MusicCaps: ``metadata/musiccaps-public.csv`` and ``youtube/<ytid>.wav``.

The CSV is written as the published file is: the real header, QUOTE_MINIMAL quoting (a single
AudioSet label bare, several quoted; aspect lists and most captions quoted), ``True``/``False``
booleans, integer seconds, CRLF between records and a bare LF inside a quoted caption (the
circulating copy with mixed line endings).

Planted cases:

- ``-0Gj8-vB1q4``: the real first row (eval, ytid starting with ``-``) -> test;
- ``-0SdAVK79lg``: one bare AudioSet label, train;
- ``2unse6chkMU``: eval + ``is_balanced_subset=True``, a caption with a bare LF and ``"`` -> test;
- ``5Y_mT93tkvQ``: non-ASCII caption, aspect ``"children's song"`` double-quoted in the literal,
  drawn into ``valid`` by ``hashed_split`` (seed 0, 10 %);
- ``Ah_aYOGnQ_I``: a clip at 11..21 s (AudioSet has it at 11.100..21.100), train;
- ``BvQ3aBqdQvA``: train, no ``youtube/BvQ3aBqdQvA.wav`` (its download must fail);
- rejected: an empty caption, ``end_s == start_s``, a non-numeric ``start_s``, an aspect list that
  is not a literal, a row with three fields.

``AUDIOSET_SEGMENTS`` lists the same videos as AudioSet segments (MusicCaps train rows are in
AudioSet's balanced CSV, eval rows in its eval CSV, with the same labels): ``tests.datasets.audioset``
writes them into its CSVs so the two sources can be checked against each other.
"""

from __future__ import annotations

import csv
import io
import math
import pathlib

import numpy as np
import soundfile as sf

SR = 16000
SECONDS = 12.0
HEADER = ["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption",
          "author_id", "is_balanced_subset", "is_audioset_eval"]

CAPTION_FIRST = (
    "The low quality recording features a ballad song that contains sustained strings, mellow piano "
    "melody and soft female vocal singing over it. It sounds sad and soulful, like something you "
    "would hear at Sunday services."
)
CAPTION_GUITAR = (
    "This song features an electric guitar as the main instrument. The guitar plays a descending run in "
    "the beginning then plays an arpeggiated chord followed by a double stop hammer on to a higher note. "
    "This is accompanied by a piano playing backing chords and simple percussion."
)
CAPTION_MULTILINE = (
    'A rock band plays a fast song.\nThe singer shouts "hey!" before the chorus, '
    "and the drums are loud and distorted."
)
CAPTION_UNICODE = (
    "A cheerful children's song: a xylophone plays a simple melody while kids sing « la la la » — "
    "très joyeux, like a Japanese 童謡."
)
CAPTION_JAZZ = "A smooth jazz tune with a saxophone solo over walking double bass and brushed drums."
CAPTION_POP = "An upbeat pop song with a female singer and bright synth chords over a four-on-the-floor beat."

# (ytid, start_s, end_s, labels, aspect_list literal, caption, author_id, balanced, eval)
ROWS = [
    ("-0Gj8-vB1q4", "30", "40", "/m/0140xf,/m/02cjck,/m/04rlf",
     "['low quality', 'sustained strings melody', 'soft female vocal', 'mellow piano melody', "
     "'sad', 'soulful', 'ballad']", CAPTION_FIRST, "4", "False", "True"),
    ("-0SdAVK79lg", "30", "40", "/m/0155w",
     "['guitar song', 'piano backing', 'simple percussion', 'relaxing melody', 'slow tempo', 'bass', "
     "'country feel', 'instrumental music', 'no voice']", CAPTION_GUITAR, "0", "False", "False"),
    ("2unse6chkMU", "30", "40", "/m/04rlf,/m/06by7",
     "['rock', 'male vocal', 'shouting', 'loud drums', 'distorted guitar', 'fast tempo', 'energetic']",
     CAPTION_MULTILINE, "6", "True", "True"),
    ("5Y_mT93tkvQ", "0", "10", "/m/04rlf,/m/05fw6t",
     "['kids music', \"children's song\", 'xylophone', 'happy', 'kids singing']",
     CAPTION_UNICODE, "2", "False", "False"),
    ("Ah_aYOGnQ_I", "11", "21", "/m/04rlf,/m/03_d0",
     "['jazz', 'saxophone solo', 'double bass', 'medium tempo', 'smooth']", CAPTION_JAZZ, "1", "False",
     "False"),
    ("BvQ3aBqdQvA", "60", "70", "/m/04rlf,/m/064t9",
     "['pop', 'female vocal', 'bright synth', 'upbeat', 'dance']", CAPTION_POP, "3", "False", "False"),
    ("Fv9swdLA-lo", "30", "40", "/m/04rlf", "['ambient']", "", "5", "False", "False"),
    ("Kmgo00avvEw", "40", "40", "/m/04rlf", "['techno']", "A techno loop.", "5", "False", "False"),
    ("TkclVqlyKx4", "abc", "40", "/m/04rlf", "['folk']", "A folk song with a fiddle.", "5", "False",
     "False"),
    ("ZZrvO_3cRFU", "30", "40", "/m/04rlf", "['unterminated", "A pop song.", "5", "False", "False"),
]
MALFORMED_LINE = "cADT8fUucLQ,30,40"
WITHOUT_AUDIO = "BvQ3aBqdQvA"

# The same videos as AudioSet segments: (csv, ytid, start, end, labels). AudioSet has one of
# them at 11.100 s where MusicCaps says 11 (datasets.md: two clips really start at 11.1/40.4 s).
AUDIOSET_SEGMENTS = [
    ("eval", "-0Gj8-vB1q4", "30.000", "40.000", "/m/0140xf,/m/02cjck,/m/04rlf"),
    ("eval", "2unse6chkMU", "30.000", "40.000", "/m/04rlf,/m/06by7"),
    ("balanced", "-0SdAVK79lg", "30.000", "40.000", "/m/0155w"),
    ("balanced", "5Y_mT93tkvQ", "0.000", "10.000", "/m/04rlf,/m/05fw6t"),
    ("balanced", "Ah_aYOGnQ_I", "11.100", "21.100", "/m/04rlf,/m/03_d0"),
    ("balanced", "BvQ3aBqdQvA", "60.000", "70.000", "/m/04rlf,/m/064t9"),
]


def write_tone(path: pathlib.Path, freq: float, seconds: float = SECONDS, sr: int = SR) -> None:
    """A short mono 16-bit WAV: a tone with a few harmonics and a beat-like envelope."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * math.pi * freq * k * t) / k for k in range(1, 4))
    env = (1 - (t * 2.0) % 1) ** 2
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.3 * x * env).astype(np.float32), sr, subtype="PCM_16")


def video_seconds(end_s: str) -> float:
    return max(SECONDS, float(end_s) + 2.0)


def csv_text() -> str:
    """The CSV: CRLF between records, a bare LF inside the multi-line caption."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for i, row in enumerate(ROWS):
        writer.writerow(row)
        if i == 6:
            out.write(MALFORMED_LINE + "\r\n")
    return out.getvalue()


def make_fixture(root: pathlib.Path) -> dict:
    root = pathlib.Path(root)
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "musiccaps-public.csv").write_bytes(csv_text().encode("utf-8"))
    for i, row in enumerate(ROWS[:6]):
        if row[0] != WITHOUT_AUDIO:
            # The "video" runs past the segment's end: yt-dlp cuts the segment out of it.
            write_tone(root / "youtube" / f"{row[0]}.wav", 220.0 * (1 + i / 4), video_seconds(row[2]))
    return {
        "options": {"metadata": str(meta), "youtube_url": "{base}/youtube/{ytid}.wav"},
        "expected": {
            "records": 6,
            "rejected": {
                "musiccaps-Fv9swdLA-lo": "empty caption",
                "musiccaps-Kmgo00avvEw": "is not after start_s",
                "musiccaps-TkclVqlyKx4": "start_s 'abc' is not a number",
                "musiccaps-ZZrvO_3cRFU": "aspect_list is not a Python list literal",
                "musiccaps-public.csv:10": "row has 3 fields, expected 9",
            },
            "splits": {"train": 3, "valid": 1, "test": 2},
            "audio_fail": {f"musiccaps-{WITHOUT_AUDIO}": "404"},
        },
    }


def write_full_size_csv(path: pathlib.Path, rows: int = 5521, seed: int = 0) -> None:
    """A MusicCaps-format CSV as large as the real one (5,521 rows, 2,858 eval, CRLF records),
    generated from the fixture rows with fresh YouTube-like ids: for sizing the fan-out."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    good = ROWS[:6]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for i in range(rows):
        base = good[i % len(good)]
        ytid = "".join(rng.choice(alphabet, 11))
        is_eval = "True" if i < 2858 else "False"
        writer.writerow((ytid, *base[1:7], "True" if i < 1000 else "False", is_eval))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue().encode("utf-8"))
