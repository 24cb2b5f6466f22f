"""Million Song Dataset + Last.fm tags, with the audio from the user's own music library.

The Last.fm dataset (http://millionsongdataset.com/lastfm/) publishes, per MSD track, the tags
Last.fm users gave it, with weights 0-100, in one of two forms:

- one JSON file per track, ``<root>/<c3>/<c4>/<c5>/<TRACKID>.json`` (the id's 3rd-5th
  characters), under the roots ``lastfm_train``, ``lastfm_test`` (the published split) and
  ``lastfm_subset`` (the 10k-song MSD subset), published as ``<root>.zip``. Keys ``artist,
  timestamp, similars, tags, track_id, title``; ``tags`` is ``[[tag, weight]]`` with the weight a
  STRING ("100"), ``similars`` is ``[[track id, number]]``; either list may be empty. The parser
  reads the unpacked folders, or the zips themselves when they were not unpacked.
- ``lastfm_tags.db`` (SQLite; tables ``tids(tid)``, ``tags(tag)``, ``tid_tag(tid, tag, val)``,
  joined on ROWIDs: ``tid_tag.tid = tids.ROWID``, ``tid_tag.tag = tags.ROWID``, as in the
  dataset's own ``demo_tags_db.py``) with the MSD's ``unique_tracks.txt``
  (``track_id<SEP>song_id<SEP>artist<SEP>title``) for the artist and title. The database has no
  train/test split, so its tracks get hashed splits. When both forms are present, the JSON wins.

MSD publishes no audio: each track is matched by artist/title against the user's library
(``library`` option, ``LibraryIndex``) and becomes a whole-track record with a ``PathAudio``.
A track with no match is not a fault of the metadata but is rejected all the same (reason
"no audio in the library for <artist> – <title>") so users see the library's coverage.

Captions: the track's tags with weight >= ``min_tag_weight``, case variants merged, junk and
personal tags ("seen live", "favorites", "awesome", the artist's own name) dropped, sorted by
weight into facets through a small explicit vocabulary (genres, moods, instruments and vocals,
eras such as "80s"; the rest is "other"), then written as sentences by ``describe``.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import sqlite3
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import Field

from musictext import storage
from musictext.ingest.base import (
    PublishedFile,
    Source,
    SourceOptions,
    find_published,
    hashed_split,
    local_copy,
    published_text,
    rejecting,
)
from musictext.ingest.describe import Facets, describe
from musictext.library import LibraryIndex, normalize
from musictext.ingest.records import PathAudio, Record, make_record, safe_id
from musictext.rejects import ItemError, Rejections

log = logging.getLogger(__name__)

LASTFM_BASE = "http://millionsongdataset.com/sites/default/files/lastfm"
MSD_ADDITIONAL = "http://millionsongdataset.com/sites/default/files/AdditionalFiles"
ROOTS = ("lastfm_test", "lastfm_train", "lastfm_subset")  # the order duplicates are resolved in
TRACK_FILE = re.compile(r"(TR[A-Z0-9]{16})\.json")
# The published training set keeps this share of its tracks (by hash of the group) for validation.
VALID_FRACTIONS = {"train": 0.9, "valid": 0.1, "test": 0.0}
SEP = "<SEP>"
LICENCE = "Last.fm tags: non-commercial research only; audio: the user's own library"


class MsdLastfmOptions(SourceOptions):
    # The user's music directory (local path or bucket URI) the tracks are matched against.
    library: str = Field(min_length=1)
    # Last.fm tag weights are 0-100 (relative to the track's top tag); lower ones are noise.
    min_tag_weight: int = Field(default=10, ge=0, le=100)


# --- tags -> facets -------------------------------------------------------------------------

# Spelling variants to one name (applied after lowercasing and whitespace cleanup).
ALIASES = {
    "hip-hop": "hip hop", "hiphop": "hip hop", "rnb": "r&b", "r and b": "r&b", "rhythm and blues": "r&b",
    "electronica": "electronic", "trip hop": "trip-hop", "triphop": "trip-hop", "drum n bass": "drum and bass",
    "drum'n'bass": "drum and bass", "dnb": "drum and bass", "d&b": "drum and bass", "post rock": "post-rock",
    "post punk": "post-punk", "synth pop": "synthpop", "synth-pop": "synthpop", "chill out": "chillout",
    "chill-out": "chillout", "singer songwriter": "singer-songwriter", "female vocalist": "female vocals",
    "female vocalists": "female vocals", "female vocal": "female vocals", "male vocalist": "male vocals",
    "male vocalists": "male vocals", "male vocal": "male vocals", "alt rock": "alternative rock",
    "alt-rock": "alternative rock", "prog rock": "progressive rock", "prog": "progressive rock",
    "sax": "saxophone", "synthesizer": "synth", "synths": "synth", "melancholic": "melancholy",
    "relax": "relaxing", "80's": "80s", "70's": "70s", "60's": "60s", "90's": "90s", "50's": "50s",
    "00's": "00s",
}
GENRES = frozenset({
    "rock", "pop", "alternative", "indie", "electronic", "electro", "dance", "house", "techno", "trance",
    "dubstep", "ambient", "downtempo", "trip-hop", "chillout", "lounge", "jazz", "blues", "soul", "funk",
    "r&b", "rap", "reggae", "ska", "punk", "hardcore", "emo", "metal", "grunge", "post-rock", "post-punk",
    "shoegaze", "disco", "country", "folk", "americana", "latin", "world", "classical", "soundtrack",
    "experimental", "industrial", "gothic", "britpop", "rockabilly", "gospel", "christian", "j-pop",
    "k-pop", "idm", "noise", "psychedelic", "new-age", "bluegrass", "swing", "bossa-nova", "salsa",
    "flamenco", "opera", "grime", "garage", "dub", "oldies",
    "hip hop", "alternative rock", "indie rock", "indie pop", "drum and bass", "hard rock", "classic rock",
    "soft rock", "progressive rock", "progressive metal", "heavy metal", "death metal", "black metal",
    "thrash metal", "nu metal", "punk rock", "pop punk", "psychedelic rock", "garage rock", "blues rock",
    "folk rock", "new wave", "synthpop", "smooth jazz", "acid jazz", "easy listening", "new age",
    "singer-songwriter", "post-hardcore", "dance pop", "electropop", "big beat",
    "breakbeat", "minimal techno", "deep house", "progressive house", "neo-soul", "motown", "doo wop",
    "musical", "film score", "video game music", "lo-fi",
})
MOODS = frozenset({
    "mellow", "chill", "chilled", "relaxing", "calm", "sad", "melancholy", "happy", "upbeat", "energetic",
    "dark", "romantic", "beautiful", "sexy", "party", "dreamy", "atmospheric", "aggressive", "angry",
    "epic", "uplifting", "peaceful", "fun", "groovy", "sweet", "depressing", "emotional", "haunting",
    "catchy", "soothing", "moody", "intense", "playful", "nostalgic", "sentimental", "hypnotic",
    "ethereal", "somber", "quirky", "dramatic", "cheerful", "feel good", "feel-good",
})
INSTRUMENTS = frozenset({
    "guitar", "piano", "bass", "drums", "violin", "cello", "saxophone", "trumpet", "synth", "organ",
    "strings", "harmonica", "banjo", "accordion", "flute", "clarinet", "harp", "ukulele", "mandolin",
    "keyboard", "percussion", "horns", "brass", "vocals", "choir", "acoustic guitar", "electric guitar",
    "female vocals", "male vocals", "bass guitar",
})
# Decades: "80s", "1980s", "2000s"; written "from the 80s".
ERA = re.compile(r"(?:19)?([5-9]0)s|(20[0-2]0)s|(00)s")
# Tags about the listener, not the music.
JUNK = frozenset({
    "favorites", "favourites", "favorite", "favourite", "fav", "favs", "faves", "awesome",
    "love", "loved", "cool", "good", "great", "amazing", "best", "nice", "perfect", "classic", "classics",
    "spotify", "lastfm", "itunes", "pandora", "youtube", "owned", "wishlist", "music", "songs", "song",
    "misc", "other", "random", "unknown",
    "seen live", "favorite songs", "favourite songs", "check out", "my music", "albums i own",
    "to buy", "love songs", "loved tracks", "good stuff", "best songs ever", "all time favorites",
})
JUNK_PATTERNS = re.compile(
    r"\b(?:my|mine|i|me|fav\w*|favou?rites?|seen|listen\w*|check|buy|wish|own(?:ed)?|playlist|"
    r"lastfm|last\.fm|spotify|pandora|itunes|youtube|listeners)\b"
    r"|^\d+ stars?$|^[\d\W_]+$"
)


def canonical(tag: str) -> str:
    text = " ".join(str(tag).lower().replace("_", " ").split())
    return ALIASES.get(text, text)


def is_junk(tag: str, artist: str = "") -> bool:
    if not tag or len(tag) > 40 or tag in JUNK or JUNK_PATTERNS.search(tag):
        return True
    return bool(artist) and normalize(tag) == normalize(artist)  # tagging a track with its artist


def era(tag: str) -> str | None:
    m = ERA.fullmatch(tag)
    if not m:
        return None
    if m.group(1):
        return f"{m.group(1)}s"
    return "2000s" if m.group(3) else f"{m.group(2)}s"


def usable_tags(raw: object, min_weight: float, artist: str = "") -> list[tuple[str, int]]:
    """(tag, weight) kept for captions, heaviest first: weights parsed (strings in the JSON),
    case/spelling variants merged at their highest weight, junk and light tags dropped."""
    merged: dict[str, float] = {}
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            continue
        name, weight = entry
        try:
            value = float(weight)
        except (TypeError, ValueError):
            continue
        tag = canonical(name) if isinstance(name, str) else ""
        if value < min_weight or is_junk(tag, artist):
            continue
        merged[tag] = max(merged.get(tag, value), value)
    ranked = sorted(merged.items(), key=lambda kv: -kv[1])  # stable: ties keep the published order
    return [(tag, round(weight)) for tag, weight in ranked]


def facets_of(tags: list[str]) -> Facets:
    """Tags (heaviest first) sorted into facets with the vocabulary; unknown tags -> other."""
    f = Facets()
    for tag in tags:
        decade = era(tag)
        if decade:
            f.other.append(f"from the {decade}")
        elif tag in GENRES or any(tag.endswith(" " + g) for g in ("rock", "pop", "jazz", "metal", "punk",
                                                                  "hip hop", "folk", "house", "soul")):
            f.genre.append(tag)
        elif tag in MOODS:
            f.mood.append(tag)
        elif tag in INSTRUMENTS:
            f.instrument.append(tag)
        else:
            f.other.append(tag)
    return f


# --- reading the published files --------------------------------------------------------------


@dataclass
class LastfmTrack:
    track_id: str
    artist: str
    title: str
    tags: object  # [[tag, weight]] as published
    root: str  # lastfm_train | lastfm_test | lastfm_subset | lastfm_tags.db


def _root_of(rel: str) -> str | None:
    """The Last.fm root a JSON file lies under (the nearest folder named like one)."""
    for part in reversed(rel.split("/")[:-1]):
        if part in ROOTS:
            return part
    return None


def _scan(meta_dir: str) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """One walk of ``meta_dir``: root -> [(uri, item name)] of unpacked per-track JSON files,
    and root -> URI of the published ``<root>.zip`` (the shallowest copy)."""
    fs, base = storage.fs_for(meta_dir)
    files: dict[str, list[tuple[str, str]]] = {}
    zips: dict[str, str] = {}
    for path in sorted(fs.find(base), key=lambda p: (p.count("/"), p)):
        rel = posixpath.relpath(path, base)
        name = posixpath.basename(rel)
        if TRACK_FILE.fullmatch(name):
            root = _root_of(rel)
            if root:
                files.setdefault(root, []).append((storage.join(meta_dir, rel), rel[rel.rindex(root):]))
        elif name.endswith(".zip") and name[:-4] in ROOTS:
            zips.setdefault(name[:-4], storage.join(meta_dir, rel))
    for listed in files.values():
        listed.sort(key=lambda f: f[1])
    return files, zips


def parse_track_json(data: bytes, item: str, root: str) -> LastfmTrack:
    """One per-track JSON file; ItemError when it is not a usable track object."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ItemError(item, f"not valid JSON ({getattr(err, 'msg', err)})") from None
    if not isinstance(obj, dict):
        raise ItemError(item, "not a JSON object")
    tid = obj.get("track_id")
    if not isinstance(tid, str) or not tid:
        raise ItemError(item, "no track_id")
    return LastfmTrack(tid, str(obj.get("artist") or ""), str(obj.get("title") or ""), obj.get("tags"), root)


def iter_json_tracks(meta_dir: str, rejections: Rejections) -> Iterator[LastfmTrack] | None:
    """Tracks of the JSON form (unpacked roots, else the published zips); None if absent."""
    files, zips = _scan(meta_dir)
    zips = {root: uri for root, uri in zips.items() if root not in files}
    if not files and not zips:
        return None

    def tracks() -> Iterator[LastfmTrack]:
        for root in ROOTS:
            if root in files:
                for uri, item in files[root]:
                    with rejecting(rejections):
                        yield parse_track_json(storage.read_bytes(uri), item, root)
            elif root in zips:
                yield from _zip_tracks(zips[root], root, rejections)

    return tracks()


def _zip_tracks(uri: str, root: str, rejections: Rejections) -> Iterator[LastfmTrack]:
    with local_copy(uri) as path, zipfile.ZipFile(path) as zf:  # zipfile needs a local file
        for member in sorted(zf.namelist()):
            if TRACK_FILE.fullmatch(posixpath.basename(member)):
                with rejecting(rejections):
                    yield parse_track_json(zf.read(member), f"{root}.zip:{member}", root)


def read_unique_tracks(uri: str, wanted: set[str], rejections: Rejections) -> dict[str, tuple[str, str]]:
    """track id -> (artist, title) from MSD's unique_tracks.txt, for the ``wanted`` ids."""
    out: dict[str, tuple[str, str]] = {}
    text = published_text(storage.read_bytes(uri), posixpath.basename(uri), rejections)
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(SEP)
        if len(parts) != 4:
            rejections.add(f"unique_tracks.txt:{line_no}", f"expected 4 fields separated by {SEP}, got {len(parts)}")
            continue
        tid = parts[0].strip()
        if tid in wanted:
            out[tid] = (parts[2].strip(), parts[3].strip())
    return out


TAGS_SQL = """
SELECT tids.tid, tags.tag, tid_tag.val
FROM tids
LEFT JOIN tid_tag ON tid_tag.tid = tids.ROWID
LEFT JOIN tags ON tags.ROWID = tid_tag.tag
ORDER BY tids.ROWID, tid_tag.val DESC
"""


def iter_db_tracks(db_uri: str, unique_uri: str, rejections: Rejections) -> Iterator[LastfmTrack]:
    with local_copy(db_uri) as path:  # sqlite3 opens only local files
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            ids = {row[0] for row in conn.execute("SELECT tid FROM tids")}
            names = read_unique_tracks(unique_uri, ids, rejections)
            current: str | None = None
            tags: list[list] = []
            for tid, tag, val in conn.execute(TAGS_SQL):
                if tid != current:
                    if current is not None:
                        yield _db_track(current, tags, names, rejections)
                    current, tags = tid, []
                if tag is not None:
                    tags.append([tag, val])
            if current is not None:
                yield _db_track(current, tags, names, rejections)
        finally:
            conn.close()


def _db_track(tid: str, tags: list, names: dict, rejections: Rejections) -> LastfmTrack | None:
    if tid not in names:
        rejections.add(tid, "no artist/title for it in unique_tracks.txt")
        return None
    artist, title = names[tid]
    return LastfmTrack(tid, artist, title, tags, "lastfm_tags.db")


# --- the source -------------------------------------------------------------------------------


class MsdLastfmSource(Source):
    name = "msd_lastfm"
    description = ("Million Song Dataset tracks described by their Last.fm tags; audio from the user's "
                   "own library matched by artist/title (full songs)")
    phase = 2
    Options = MsdLastfmOptions
    licence = LICENCE
    published = (
        PublishedFile("lastfm_train.zip", f"{LASTFM_BASE}/lastfm_train.zip"),
        PublishedFile("lastfm_test.zip", f"{LASTFM_BASE}/lastfm_test.zip"),
        PublishedFile("lastfm_subset.zip", f"{LASTFM_BASE}/lastfm_subset.zip", required=False),
        PublishedFile("lastfm_tags.db", f"{LASTFM_BASE}/lastfm_tags.db", required=False),
        PublishedFile("unique_tracks.txt", f"{MSD_ADDITIONAL}/unique_tracks.txt", required=False),
    )

    def parse(self, meta_dir: str, opts: MsdLastfmOptions, rejections: Rejections) -> Iterator[Record]:
        tracks = iter_json_tracks(meta_dir, rejections)
        if tracks is None:
            db = find_published(meta_dir, "lastfm_tags.db", required=False)
            if db is None:
                raise FileNotFoundError(
                    f"no Last.fm tags under {meta_dir}: neither lastfm_train/lastfm_test/lastfm_subset "
                    "(folders or .zip) nor lastfm_tags.db")
            unique = find_published(meta_dir, "unique_tracks.txt")  # the db has no artist/title
            tracks = iter_db_tracks(db, unique, rejections)
        library = LibraryIndex(opts.library)
        seen: set[str] = set()
        counts = {"tagged": 0, "matched": 0}
        for track in tracks:
            if track is None or track.track_id in seen:  # lastfm_subset repeats train/test tracks
                continue
            seen.add(track.track_id)
            with rejecting(rejections):
                yield self.make(track, opts, library, counts)
        unmatched = counts["tagged"] - counts["matched"]
        log.info("msd_lastfm: %d of %d tagged tracks found in the library %s (%d unmatched)",
                 counts["matched"], counts["tagged"], opts.library, unmatched)

    def make(self, track: LastfmTrack, opts: MsdLastfmOptions, library: LibraryIndex, counts: dict) -> Record:
        tid = track.track_id
        if not track.title:
            raise ItemError(tid, "no title")
        kept = usable_tags(track.tags, opts.min_tag_weight, track.artist)
        if not kept:
            raise ItemError(tid, f"no usable tag (none with weight >= {opts.min_tag_weight} "
                                 "that describes the music)")
        names = [t for t, _ in kept]
        captions = describe(facets_of(names), tid, n=3)
        counts["tagged"] += 1
        found = library.match(track.artist, track.title)
        if found is None:
            raise ItemError(tid, f"no audio in the library for {track.artist} – {track.title}")
        counts["matched"] += 1
        group = f"msd:{tid}"
        if track.root == "lastfm_test":
            split = "test"
        elif track.root == "lastfm_train":
            split = hashed_split(group, opts.split_seed, VALID_FRACTIONS)
        else:
            split = hashed_split(group, opts.split_seed)
        meta = {"artist": track.artist, "title": track.title, "tags": [[t, w] for t, w in kept[:10]],
                "lastfm": track.root, "library_path": found.path}
        if found.duration_s:
            meta["duration_s"] = found.duration_s
        return make_record(
            tid,
            track_id=f"{self.name}-{safe_id(tid)}",
            source=self.name,
            split=split,
            captions=captions,
            tags=names,
            licence=LICENCE,
            audio=PathAudio(root=opts.library, path=found.path),
            group=group,
            whole_track=True,
            meta=meta,
        )


