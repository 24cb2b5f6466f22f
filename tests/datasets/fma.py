"""A tiny FMA in the published layout: ``metadata/fma_metadata.zip`` (``fma_metadata/tracks.csv``
with its two header rows plus the ``track_id`` index-name row, multi-line quoted HTML fields,
list literals; ``fma_metadata/genres.csv``) and ``audio/fma_small.zip`` (members
``fma_small/NNN/NNNNNN.mp3`` plus the ``fma_small/checksums`` sha1 list).

Rows: 2, 5, 10, 140, 148 are in the small subset (148's MP3 is missing from the zip: its download
fails); 20 is medium only (genre_top empty, genres span two roots); a row whose id is not a number
and 141 (no genres, no tags) are rejected.
"""

from __future__ import annotations

import csv
import hashlib
import io
import pathlib
import zipfile

import numpy as np
import soundfile as sf

ALBUM = ["comments", "date_created", "date_released", "engineer", "favorites", "id", "information",
         "listens", "producer", "tags", "title", "tracks", "type"]
ARTIST = ["active_year_begin", "active_year_end", "associated_labels", "bio", "comments", "date_created",
          "favorites", "id", "latitude", "location", "longitude", "members", "name", "related_projects",
          "tags", "website", "wikipedia_page"]
SET = ["split", "subset"]
TRACK = ["bit_rate", "comments", "composer", "date_created", "date_recorded", "duration", "favorites",
         "genre_top", "genres", "genres_all", "information", "interest", "language_code", "license",
         "listens", "lyricist", "number", "publisher", "tags", "title"]
COLUMNS = ([("album", c) for c in ALBUM] + [("artist", c) for c in ARTIST] + [("set", c) for c in SET]
           + [("track", c) for c in TRACK])
assert len(COLUMNS) == 52  # as in the real tracks.csv

GENRES = [  # genre_id, #tracks, parent, title, top_level (rows of the real genres.csv)
    (1, 8693, 38, "Avant-Garde", 38),
    (10, 13845, 0, "Pop", 10),
    (12, 32923, 0, "Rock", 12),
    (17, 12706, 0, "Folk", 17),
    (21, 8389, 0, "Hip-Hop", 21),
    (38, 38154, 0, "Experimental", 38),
    (58, 2502, 12, "Psych-Rock", 12),
    (76, 2731, 10, "Experimental Pop", 10),
    (103, 5432, 17, "Singer-Songwriter", 17),
]

BIO = ('<p>A Way Of Life, A Collective of Hip-Hop from the Bronx.</p>\n'
       '<p>Members say "we keep it <b>raw</b>", see <a href="http://www.AzillionRecords.blogspot.com">'
       'the label</a>, est. 2006</p>')
TRAILING_LICENCE = "Attribution-Noncommercial-No Derivative Works 3.0 United States  "


def _track(tid, *, split, subset, genre_top, genres, genres_all, tags, title, artist, album,
           duration, licence, bio="", info="<p></p>"):
    values = {
        ("album", "comments"): "0", ("album", "date_created"): "2008-11-26 01:44:45",
        ("album", "date_released"): "2009-01-05 00:00:00", ("album", "favorites"): "4",
        ("album", "id"): "1", ("album", "information"): info, ("album", "listens"): "6073",
        ("album", "tags"): "[]", ("album", "title"): album, ("album", "tracks"): "7",
        ("album", "type"): "Album",
        ("artist", "active_year_begin"): "2006-01-01 00:00:00", ("artist", "bio"): bio,
        ("artist", "comments"): "0", ("artist", "date_created"): "2008-11-26 01:42:32",
        ("artist", "favorites"): "9", ("artist", "id"): "1", ("artist", "latitude"): "40.058324",
        ("artist", "location"): "New Jersey", ("artist", "longitude"): "-74.405661",
        ("artist", "members"): "Sajje Morocco,Brownbum,ZawidaGod,Custodian of Records,Braino",
        ("artist", "name"): artist, ("artist", "tags"): "['awol']",
        ("artist", "website"): "http://www.AzillionRecords.blogspot.com",
        ("set", "split"): split, ("set", "subset"): subset,
        ("track", "bit_rate"): "256000", ("track", "comments"): "0",
        ("track", "date_created"): "2008-11-26 01:48:12", ("track", "date_recorded"): "2008-11-26 00:00:00",
        ("track", "duration"): str(duration), ("track", "favorites"): "2", ("track", "genre_top"): genre_top,
        ("track", "genres"): genres, ("track", "genres_all"): genres_all, ("track", "interest"): "4656",
        ("track", "language_code"): "en", ("track", "license"): licence, ("track", "listens"): "1293",
        ("track", "number"): "3", ("track", "tags"): tags, ("track", "title"): title,
    }
    return [str(tid)] + [values.get(c, "") for c in COLUMNS]


ROWS = [
    _track(2, split="training", subset="small", genre_top="Hip-Hop", genres="[21]", genres_all="[21]",
           tags="[]", title="Food", artist="AWOL", album="AWOL - A Way Of Life", duration=168,
           licence="Attribution-NonCommercial-ShareAlike 3.0 International", bio=BIO),
    _track(5, split="test", subset="small", genre_top="Hip-Hop", genres="[21]", genres_all="[21]",
           tags="[]", title="This World", artist="AWOL", album="AWOL - A Way Of Life", duration=206,
           licence="Attribution-NonCommercial-ShareAlike 3.0 International", bio=BIO),
    _track(10, split="validation", subset="small", genre_top="Pop", genres="[10]", genres_all="[10]",
           tags="[]", title="Freeway", artist="Kurt Vile", album="Constant Hitmaker", duration=161,
           licence=TRAILING_LICENCE, info='<p>Kurt\'s first LP,\nrecorded at home, "lo-fi" &amp; proud</p>'),
    _track(20, split="training", subset="medium", genre_top="", genres="[76, 103]",
           genres_all="[17, 10, 76, 103]", tags="['indie', 'lo-fi']", title="Spiritual Level",
           artist="Nicky Cook", album="Niris", duration=311,
           licence="Attribution-NonCommercial-NoDerivatives (aka Music Sharing) 3.0 International"),
    _track(140, split="training", subset="small", genre_top="", genres="[]", genres_all="[]",
           tags="['folk', 'acoustic']", title="Queen Of The Wires", artist="Alec K. Redfearn",
           album="Every Man For Himself", duration=253,
           licence="Attribution-Noncommercial-Share Alike 3.0 United States"),
    ["abc"] + ["" for _ in COLUMNS],  # a broken row: its id is no number
    _track(141, split="training", subset="small", genre_top="", genres="[]", genres_all="[]",
           tags="[]", title="Ohio", artist="Alec K. Redfearn", album="Every Man For Himself", duration=182,
           licence="Attribution-Noncommercial-Share Alike 3.0 United States"),
    _track(148, split="test", subset="small", genre_top="Rock", genres="[58]", genres_all="[12, 58]",
           tags="['psychedelic']", title="Blackout 2", artist="Amoebic Ensemble", album="Amoebiasis",
           duration=131, licence="Attribution-NonCommercial-NoDerivatives (aka Music Sharing) 3.0 International"),
]
SMALL_WITH_AUDIO = (2, 5, 10, 140)  # 148 is listed in small but missing from the zip


def tracks_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")  # as pandas' to_csv writes it
    writer.writerow([""] + [g for g, _ in COLUMNS])
    writer.writerow([""] + [c for _, c in COLUMNS])
    writer.writerow(["track_id"] + ["" for _ in COLUMNS])
    writer.writerows(ROWS)
    return out.getvalue()


def genres_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
    writer.writerows(GENRES)
    return out.getvalue()


def _mp3(tid: int, seconds: float = 6.0, sr: int = 22050) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * (220 + tid) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    buf = io.BytesIO()
    sf.write(buf, tone.astype("float32"), sr, format="MP3")
    return buf.getvalue()


def make_fixture(root: pathlib.Path) -> dict:
    root = pathlib.Path(root)
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(meta / "fma_metadata.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fma_metadata/tracks.csv", tracks_csv())
        zf.writestr("fma_metadata/genres.csv", genres_csv())

    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    checksums = []
    with zipfile.ZipFile(audio / "fma_small.zip", "w", zipfile.ZIP_STORED) as zf:
        for tid in SMALL_WITH_AUDIO:
            rel = f"{tid:06d}"[:3] + f"/{tid:06d}.mp3"
            data = _mp3(tid)
            zf.writestr(f"fma_small/{rel}", data)
            checksums.append(f"{hashlib.sha1(data).hexdigest()}  {rel}\n")
        zf.writestr("fma_small/checksums", "".join(checksums))
    sha1 = hashlib.sha1((audio / "fma_small.zip").read_bytes()).hexdigest()
    text = tracks_csv()
    bad_line = text[: text.index("\nabc,") + 1].count("\n") + 1  # physical line of the broken row

    return {
        "options": {
            "metadata": str(meta),
            "audio_base_url": "{base}/audio",
            "subset": "small",
            "archive_sha1": sha1,  # the fixture's own zip (the real one's is in fma.ARCHIVE_SHA1)
        },
        "expected": {
            "records": 5,
            "rejected": {
                f"tracks.csv:{bad_line}": "not a non-negative integer",
                "fma-141": "no genre and no tags",
            },
            "splits": {"train": 2, "valid": 1, "test": 2},
            "audio_fail": {"fma-148": "000148.mp3"},
        },
    }
