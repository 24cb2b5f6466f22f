"""A tiny MagnaTagATune in the published layout: ``metadata/annotations_final.csv`` (tab-separated,
every field double-quoted, ``clip_id`` + the 188 real tag columns in their real order +
``mp3_path``), ``metadata/clip_info_final.csv`` and ``audio/mp3.zip.001..003`` (one real zip of
16 kHz mono MP3s, members ``<folder>/<name>.mp3``, split byte-wise into three parts).

Clips: 2 and 6 (folder f, test; one track), 10 (folder 0, train; "no voice" + "no singer"),
20 (folder c, valid), 35644 (folder d, test: its member is a 0-byte MP3 as in the real zip, so
its download fails); rejected: 15 (no positive tag), 40 (only negations), a row with a
non-numeric clip_id and a row with a missing field.
"""

from __future__ import annotations

import io
import pathlib
import zipfile

import numpy as np
import soundfile as sf

# The 188 tag columns of the real annotations_final.csv, in order (between clip_id and mp3_path).
TAGS = [
    "no voice", "singer", "duet", "plucking", "hard rock", "world", "bongos", "harpsichord", "female singing",
    "clasical", "sitar", "chorus", "female opera", "male vocal", "vocals", "clarinet", "heavy", "silence",
    "beats", "men", "woodwind", "funky", "no strings", "chimes", "foreign", "no piano", "horns", "classical",
    "female", "no voices", "soft rock", "eerie", "spacey", "jazz", "guitar", "quiet", "no beat", "banjo",
    "electric", "solo", "violins", "folk", "female voice", "wind", "happy", "ambient", "new age", "synth",
    "funk", "no singing", "middle eastern", "trumpet", "percussion", "drum", "airy", "voice", "repetitive",
    "birds", "space", "strings", "bass", "harpsicord", "medieval", "male voice", "girl", "keyboard", "acoustic",
    "loud", "classic", "string", "drums", "electronic", "not classical", "chanting", "no violin", "not rock",
    "no guitar", "organ", "no vocal", "talking", "choral", "weird", "opera", "soprano", "fast",
    "acoustic guitar", "electric guitar", "male singer", "man singing", "classical guitar", "country", "violin",
    "electro", "reggae", "tribal", "dark", "male opera", "no vocals", "irish", "electronica", "horn",
    "operatic", "arabic", "lol", "low", "instrumental", "trance", "chant", "strange", "drone", "synthesizer",
    "heavy metal", "modern", "disco", "bells", "man", "deep", "fast beat", "industrial", "hard", "harp",
    "no flute", "jungle", "pop", "lute", "female vocal", "oboe", "mellow", "orchestral", "viola", "light",
    "echo", "piano", "celtic", "male vocals", "orchestra", "eastern", "old", "flutes", "punk", "spanish", "sad",
    "sax", "slow", "male", "blues", "vocal", "indian", "no singer", "scary", "india", "woman", "woman singing",
    "rock", "dance", "piano solo", "guitars", "no drums", "jazzy", "singing", "cello", "calm", "female vocals",
    "voices", "different", "techno", "clapping", "house", "monks", "flute", "not opera", "not english",
    "oriental", "beat", "upbeat", "soft", "noise", "choir", "female singer", "rap", "metal", "hip hop", "quick",
    "water", "baroque", "women", "fiddle", "english",
]
assert len(TAGS) == 188 and len(set(TAGS)) == 188

BACH = "american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria"
CLIPS = [  # clip_id, positive tags, mp3_path, clip_info (track_number, title, artist, album, start, end)
    (2, ["classical", "strings", "violin", "violins", "slow", "no vocals"], f"f/{BACH}-30-59.mp3",
     ("1", "BWV54 - I Aria", "American Bach Soloists", "J.S. Bach Solo Cantatas", "30", "59")),
    (6, ["classical", "harpsicord", "harpsichord", "quiet"], f"f/{BACH}-88-117.mp3",
     ("1", "BWV54 - I Aria", "American Bach Soloists", "J.S. Bach Solo Cantatas", "88", "117")),
    (10, ["guitar", "spanish", "no voice", "no singer", "fast"], "0/jeff_wahl-guitarscapes-03-spanish_sun-0-29.mp3",
     ("3", "Spanish Sun", "Jeff Wahl", "Guitarscapes", "0", "29")),
    (15, [], "0/jeff_wahl-guitarscapes-03-spanish_sun-29-58.mp3",
     ("3", "Spanish Sun", "Jeff Wahl", "Guitarscapes", "29", "58")),
    (20, ["female vocal", "woman", "vocals", "pop", "rock"], "c/lisa_debenedictis-fruitless-02-fruitless-146-175.mp3",
     ("2", "Fruitless", "Lisa DeBenedictis", "Fruitless", "146", "175")),
    (40, ["no piano", "not rock"], "c/lisa_debenedictis-fruitless-02-fruitless-175-204.mp3",
     ("2", "Fruitless", "Lisa DeBenedictis", "Fruitless", "175", "204")),
    (35644, ["techno", "electronic", "beat"], "d/strojovna_07-dirnix-06-basetra_noje-204-233.mp3",
     ("6", "Basetra Noje", "Strojovna 07", "Dirnix", "204", "233")),
]
WITH_AUDIO = (2, 6, 10, 20)
EMPTY_MP3 = 35644  # a 0-byte member, as clips 35644, 55753 and 57881 are in the real zip


def _q(value) -> str:
    return f'"{value}"'


def annotations_csv(quoted: bool = True, newline: str = "\n") -> str:
    wrap = _q if quoted else str
    lines = ["\t".join(wrap(h) for h in ["clip_id", *TAGS, "mp3_path"])]
    for clip_id, positive, path, _ in CLIPS:
        assert set(positive) <= set(TAGS)
        lines.append("\t".join(wrap(v) for v in [clip_id, *("1" if t in positive else "0" for t in TAGS), path]))
    lines.append("\t".join(wrap(v) for v in ["x17", *("0" for _ in TAGS), "0/broken.mp3"]))  # bad clip_id
    lines.append("\t".join(wrap(v) for v in [77, "1", *("0" for _ in TAGS[2:]), "0/short_row.mp3"]))  # a field short
    return newline.join(lines) + newline


def clip_info_csv(quoted: bool = True) -> str:
    wrap = _q if quoted else str
    header = ["clip_id", "track_number", "title", "artist", "album", "url", "segmentStart", "segmentEnd",
              "original_url", "mp3_path"]
    lines = ["\t".join(wrap(h) for h in header)]
    for clip_id, _, path, (number, title, artist, album, start, end) in CLIPS:
        album_url = "http://www.magnatune.com/artists/albums/" + album.lower().replace(" ", "")[:12] + "/"
        original = f"http://he3.magnatune.com/all/{int(number):02d}--{title.replace(' ', '%20')}.mp3"
        lines.append("\t".join(wrap(v) for v in [clip_id, number, title, artist, album, album_url, start, end,
                                                  original, path]))
    return "\n".join(lines) + "\n"


def _mp3(seed: int, seconds: float = 4.0, sr: int = 16000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.25 * np.sin(2 * np.pi * (180 + 7 * (seed % 50)) * t) + 0.05 * np.sin(2 * np.pi * 3 * t)
    buf = io.BytesIO()
    sf.write(buf, tone.astype("float32"), sr, format="MP3")
    return buf.getvalue()


def mp3_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for clip_id, _, path, _ in CLIPS:
            if clip_id in WITH_AUDIO:
                zf.writestr(path, _mp3(clip_id))
            elif clip_id == EMPTY_MP3:
                zf.writestr(path, b"")
    return buf.getvalue()


def make_fixture(root: pathlib.Path) -> dict:
    root = pathlib.Path(root)
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "annotations_final.csv").write_text(annotations_csv(), encoding="utf-8", newline="")
    (meta / "clip_info_final.csv").write_text(clip_info_csv(), encoding="utf-8", newline="")

    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    data = mp3_zip()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    for i, name in enumerate(("mp3.zip.001", "mp3.zip.002", "mp3.zip.003")):
        (audio / name).write_bytes(data[cuts[i]:cuts[i + 1]])

    lines = annotations_csv().split("\n")
    bad_line = next(i for i, line in enumerate(lines, 1) if line.startswith('"x17"'))
    return {
        "options": {"metadata": str(meta), "audio_base_url": "{base}/audio"},
        "expected": {
            "records": 5,
            "rejected": {
                "magnatagatune-15": "no positive tags",
                "magnatagatune-40": "no describable tags",
                f"annotations_final.csv:{bad_line}": "not a number",
                "magnatagatune-77": "fields, the header has 190",
            },
            "splits": {"train": 1, "valid": 1, "test": 3},
            "audio_fail": {f"magnatagatune-{EMPTY_MP3}": "empty"},
        },
    }
