"""A tiny Last.fm dataset (MSD tags) in the real published layout, and a user's library.

``make_fixture`` writes the per-track JSON form: ``metadata/lastfm_{train,test}/<c3>/<c4>/<c5>/
<TRACKID>.json`` with the real keys (``artist, timestamp, similars, tags, track_id, title``), tag
weights as strings and similarity values as numbers. ``make_db_fixture`` writes the SQLite form
(``lastfm_tags.db`` joined on ROWIDs + ``unique_tracks.txt`` with ``<SEP>``). Both share
``library/``: FLAC/MP3 files tagged with mutagen, one MP3 named "Artist - Title.mp3" without
tags, one garbage ".mp3" whose audio cannot be decoded and one dangling symlink.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
SECONDS = 8.0

# (track_id, artist, title, tags, similars, root); weights as STRINGS, as published.
TRACKS = [
    ("TRAAAAW128F429D538", "Casual", "I Didn't Mean To",
     [["Hip-Hop", "100"], ["hip hop", "60"], ["underground hip hop", "50"], ["seen live", "40"],
      ["mellow", "30"], ["80s", "20"], ["Casual", "15"], ["favorites", "12"], ["guitar", "5"]],
     [["TRABACN128F425B784", 0.871822], ["TRIAYVO128F42A9A5C", 0.1]], "lastfm_train"),
    ("TRAAABD128F429CF47", "The Box Tops", "Soul Deep",
     [["60s", "100"], ["soul", "80"], ["oldies", "55"], ["Favorite", "30"], ["piano", "20"],
      ["male vocalists", "10"]],
     [["TRAAAAW128F429D538", 0.5]], "lastfm_train"),
    ("TRAAADZ128F9348C2E", "Sonora Santanera", "Amor De Cabaret", [], [], "lastfm_train"),
    ("TRAAAEF128F4273421", "Adam Ant", "Something Girls",
     [["seen live", "100"], ["favorites", "90"], ["awesome", "50"], ["Adam Ant", "40"], ["my top songs", "30"]],
     [], "lastfm_train"),
    ("TRAAAMO128F1481E7F", "Jeff And Sheri Easter", "The Moon And I (Ordinary Day Album Version)",
     [["gospel", "100"], ["christian", "40"]], [], "lastfm_train"),
    ("TRAAAPK128E0786D96", "Blue Harbour", "Tidewater",
     [["ambient", "100"], ["chillout", "70"], ["relaxing", "40"]], [], "lastfm_train"),
    ("TRAAARJ128F9320760", "Broken Band", "Static",
     [["noise", "100"], ["experimental", "50"]], [], "lastfm_train"),
    ("TRAAAUC128F428716F", "Gone Band", "Vanished",
     [["indie rock", "100"], ["melancholy", "35"]], [], "lastfm_train"),
    ("TRBIJYB128F14AE326", "Lumen Trio", "Night Train (Remastered 2009)",
     [["jazz", "100"], ["saxophone", "60"], ["smooth jazz", "45"], ["night", "20"]], [], "lastfm_test"),
]
MALFORMED = ("lastfm_train", "TRAAAFD128F92F423A",
             (b'{"artist": "Gob", "timestamp": "2011-08-02 11:24:03.452911", "similars": [], '
             b'"tags": [["punk", "100"]], "track_id": "TRAAAFD128F92F423A", "title": '))

# Library files: relative path -> (artist, title, genre) tags; None = no tags (name only).
LIBRARY = {
    "Casual/Fear Itself/01 I Didn't Mean To.flac": ("Casual", "I Didn't Mean To", "Hip-Hop"),
    "The Box Tops/Dimensions/03 Soul Deep.mp3": ("The Box Tops", "Soul Deep", "Soul"),
    "Adam Ant/Friend or Foe/05 Something Girls.flac": ("Adam Ant", "Something Girls", "New Wave"),
    "Unsorted/Blue Harbour - Tidewater.mp3": None,
    "Lumen Trio/Night Train.flac": ("Lumen Trio", "Night Train", "Jazz"),
    "Other/Nobody - Not In Lastfm.mp3": None,
}
CORRUPT = "Unsorted/Broken Band - Static.mp3"
DANGLING = "Unsorted/Gone Band - Vanished.mp3"  # a symlink to a file that is gone


def track_path(root: str, tid: str) -> str:
    return f"{root}/{tid[2]}/{tid[3]}/{tid[4]}/{tid}.json"


def write_audio(path: Path, seed: int, tags: tuple[str, str, str] | None) -> None:
    """An ~8 s mono tone-and-noise file (format from the extension), tagged with mutagen."""
    import mutagen

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * SECONDS)) / SR
    rng = np.random.default_rng(seed)
    y = 0.2 * np.sin(2 * np.pi * (220 + 40 * seed) * t) + 0.02 * rng.standard_normal(t.size)
    sf.write(path, y.astype(np.float32), SR)
    if tags is None:
        return
    audio = mutagen.File(path, easy=True)
    if audio.tags is None:
        audio.add_tags()
    artist, title, genre = tags
    audio["artist"] = artist
    audio["title"] = title
    audio["genre"] = genre
    audio.save()


def write_library(library: Path) -> None:
    for i, (rel, tags) in enumerate(LIBRARY.items()):
        write_audio(library / rel, i, tags)
    bad = library / CORRUPT
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(np.random.default_rng(7).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (library / DANGLING).symlink_to(library / "Unsorted/.gone/Vanished.mp3")


def _expected_splits(ids_train: list[str], ids_test: list[str]) -> dict:
    from musictext.ingest.base import hashed_split

    splits = {"train": 0, "valid": 0, "test": len(ids_test)}
    for tid in ids_train:
        splits[hashed_split(f"msd:{tid}", 0, {"train": 0.9, "valid": 0.1, "test": 0.0})] += 1
    return {k: v for k, v in splits.items() if v}


REJECTED = {
    "TRAAADZ128F9348C2E": "no usable tag",
    "TRAAAEF128F4273421": "no usable tag",
    "lastfm_train/A/A/A/TRAAAFD128F92F423A.json": "not valid JSON",
    "TRAAAMO128F1481E7F": "no audio in the library for Jeff And Sheri Easter – The Moon And I",
}
RECORDS = ["TRAAAAW128F429D538", "TRAAABD128F429CF47", "TRAAAPK128E0786D96", "TRAAARJ128F9320760",
           "TRAAAUC128F428716F", "TRBIJYB128F14AE326"]
# Garbage bytes named .mp3: listed (its name gives artist/title), undecodable (fails where the
# audio is decoded); the dangling symlink: listed, its fetch finds no file.
AUDIO_FAIL = {"msd_lastfm-TRAAARJ128F9320760": "Broken Band - Static.mp3",
              "msd_lastfm-TRAAAUC128F428716F": "not found"}


def make_fixture(root: Path) -> dict:
    """The JSON form under root/metadata, the library under root/library."""
    root = Path(root)
    meta = root / "metadata"
    for tid, artist, title, tags, similars, split_root in TRACKS:
        path = meta / track_path(split_root, tid)
        path.parent.mkdir(parents=True, exist_ok=True)
        obj = {"artist": artist, "timestamp": "2011-08-15 09:59:32.488796", "similars": similars,
               "tags": tags, "track_id": tid, "title": title}
        path.write_text(json.dumps(obj))
    bad_root, bad_id, bad_text = MALFORMED
    bad = meta / track_path(bad_root, bad_id)
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(bad_text)
    write_library(root / "library")
    test_ids = [t[0] for t in TRACKS if t[5] == "lastfm_test"]
    return {
        "options": {"metadata": str(meta), "library": str(root / "library")},
        "expected": {
            "records": len(RECORDS),
            "rejected": dict(REJECTED),
            "splits": _expected_splits([t for t in RECORDS if t not in test_ids], test_ids),
            "audio_fail": dict(AUDIO_FAIL),
            "unmatched": ["TRAAAMO128F1481E7F"],
        },
    }


def make_db_fixture(root: Path) -> dict:
    """The SQLite form: root/metadata_db/{lastfm_tags.db, unique_tracks.txt}; same library."""
    root = Path(root)
    meta = root / "metadata_db"
    meta.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(meta / "lastfm_tags.db")
    db.executescript("CREATE TABLE tids (tid TEXT); CREATE TABLE tags (tag TEXT);"
                     "CREATE TABLE tid_tag (tid INT, tag INT, val FLOAT);"
                     "CREATE INDEX idx_tid_tag_tid ON tid_tag(tid); CREATE INDEX idx_tid_tag_tag ON tid_tag(tag);")
    tag_rowid: dict[str, int] = {}
    # Tags are inserted in an order unrelated to the tracks' so a join on the wrong column fails.
    all_tags = sorted({name for t in TRACKS for name, _ in t[3]}, reverse=True)
    for name in all_tags:
        tag_rowid[name] = db.execute("INSERT INTO tags (tag) VALUES (?)", (name,)).lastrowid
    for tid, _artist, _title, tags, _sim, _root in reversed(TRACKS):
        tid_rowid = db.execute("INSERT INTO tids (tid) VALUES (?)", (tid,)).lastrowid
        for name, weight in tags:
            db.execute("INSERT INTO tid_tag VALUES (?, ?, ?)", (tid_rowid, tag_rowid[name], float(weight)))
    # A tagged track missing from unique_tracks.txt.
    orphan = db.execute("INSERT INTO tids (tid) VALUES ('TRZZZZZ128F0000000')").lastrowid
    db.execute("INSERT INTO tid_tag VALUES (?, ?, 100.0)", (orphan, tag_rowid["jazz"]))
    db.commit()
    db.close()
    lines = [f"{tid}<SEP>SO{tid[2:]}<SEP>{artist}<SEP>{title}" for tid, artist, title, *_ in TRACKS]
    lines.insert(2, "TRBROKENLINE<SEP>only two fields")
    (meta / "unique_tracks.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_library(root / "library")
    rejected = {k: v for k, v in REJECTED.items() if not k.endswith(".json")}
    rejected["TRZZZZZ128F0000000"] = "no artist/title"
    rejected["unique_tracks.txt:3"] = "expected 4 fields"
    return {
        "options": {"metadata": str(meta), "library": str(root / "library")},
        "expected": {"records": len(RECORDS), "rejected": rejected,
                     "audio_fail": dict(AUDIO_FAIL)},
    }
