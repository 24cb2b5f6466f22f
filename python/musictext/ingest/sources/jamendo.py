"""MTG-Jamendo: 55k Creative Commons tracks from Jamendo with genre, instrument and mood/theme tags.

Published metadata (https://github.com/MTG/mtg-jamendo-dataset, ``data/``):

- ``raw_30s_cleantags_50artists.tsv``: every track. ``data/autotagging.tsv`` is a git *symlink*
  to it, so a raw download of that name returns 31 bytes of text holding the target's name
  (``raw_30s_cleantags_50artists.tsv``): such a tiny file whose content is a file name is
  followed to the file it names.
- ``splits/split-0..4/autotagging-{train,validation,test}.tsv``: five artist-disjoint split
  sets (option ``split``). Every TSV has CRLF line endings (Python's csv writer) and the header
  ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``; the tags are *extra tab-separated columns*
  (``genre---rock``, ``instrument---piano``, ``mood/theme---calm``). Ids are ``track_`` + 7
  digits, ``artist_``/``album_`` + 6 digits; PATH is ``NN/<id>.mp3`` with the id unpadded and
  NN = id % 100.
- ``data/download/raw_30s_{audio,audio-low}_sha256_{tars,tracks}.txt``: ``<sha256> <name>`` lines
  for every archive and every track file (the names ``scripts/download/download.py`` reads).
- ``audio_licenses.txt`` (repository root): the per-track audio licence, in four-line blocks
  (``NN/<id>.mp3``, ``<title> by <artist> from Jamendo: <url>``, ``Available under ...: <url>``,
  blank line).

Audio: 100 tar archives per quality at ``https://cdn.freesound.org/mtg-jamendo/raw_30s/<type>/``
(``audio-low``: ``raw_30s_audio-low-NN.tar`` holding ``NN/<id>.low.mp3``, mono LAME V2;
``audio``: ``raw_30s_audio-NN.tar`` holding ``NN/<id>.mp3``, 320 kbps). The first member of each
tar is the folder ``NN`` itself.

Records: one per track (the whole track: ``raw_30s`` means tracks longer than 30 s), cut into at
most 3 clips of 30 s; captions are sentences written from the tags (the dataset has no text).
Split: the chosen split set (validation -> valid). Tracks in the main file but in none of the
split files (their tags were dropped from the splits) are kept: they take the split of their
artist's other tracks when the split set places that artist (the split sets are artist-disjoint),
else a hashed split of the artist (``split_seed``), so an artist never straddles train and test.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from musictext import storage
from musictext.ingest.base import (
    PublishedFile,
    Source,
    SourceOptions,
    find_all,
    find_published,
    hashed_split,
    published_text,
    rejecting,
)
from musictext.ingest.describe import Facets, describe
from musictext.ingest.records import ArchiveAudio, Record, make_record
from musictext.rejects import ItemError, Rejections

REPO_URL = "https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/master"
AUDIO_BASE_URL = "https://cdn.freesound.org/mtg-jamendo"  # mirror: https://essentia.upf.edu/documentation/datasets/mtg-jamendo
METADATA_LICENCE = "CC BY-NC-SA 4.0"
LICENCE = f"{METADATA_LICENCE} (metadata); audio: per-track Creative Commons (Jamendo)"

MAIN_TSV = "raw_30s_cleantags_50artists.tsv"
MAIN_LINK = "autotagging.tsv"  # a git symlink to MAIN_TSV
LICENCES_TXT = "audio_licenses.txt"
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
NUM_SPLITS = 5
SPLIT_PARTS = {"test": "test", "validation": "valid", "train": "train"}  # file part -> split; test wins

# audio_quality -> (type folder on the CDN, archive name pattern, member suffix)
QUALITIES: dict[str, tuple[str, str, str]] = {
    "low": ("audio-low", "raw_30s_audio-low-{nn}.tar", ".low.mp3"),
    "full": ("audio", "raw_30s_audio-{nn}.tar", ".mp3"),
}


def split_file(n: int, part: str) -> str:
    return f"splits/split-{n}/autotagging-{part}.tsv"


def sha256_lists(audio_type: str) -> tuple[str, str]:
    """The published checksum lists of one audio type: (tars, tracks)."""
    return f"raw_30s_{audio_type}_sha256_tars.txt", f"raw_30s_{audio_type}_sha256_tracks.txt"


def _published() -> tuple[PublishedFile, ...]:
    files = [PublishedFile(MAIN_TSV, f"{REPO_URL}/data/{MAIN_TSV}", aliases=(MAIN_LINK,))]
    # Only the chosen split set is needed (parse raises FileNotFoundError when it is missing).
    # Their names repeat across split-N folders, so the name keeps the folder.
    for n in range(NUM_SPLITS):
        for part in SPLIT_PARTS:
            files.append(PublishedFile(split_file(n, part), f"{REPO_URL}/data/{split_file(n, part)}", required=False))
    for audio_type, _, _ in QUALITIES.values():
        for name in sha256_lists(audio_type):
            files.append(PublishedFile(name, f"{REPO_URL}/data/download/{name}", required=False))
    files.append(PublishedFile(LICENCES_TXT, f"{REPO_URL}/{LICENCES_TXT}", required=False))
    return tuple(files)


class JamendoOptions(SourceOptions):
    # Which of the five published split sets (data/splits/split-N) gives train/valid/test.
    split: int = Field(default=0, ge=0, le=NUM_SPLITS - 1)
    # "low": raw_30s/audio-low (mono VBR MP3, 156 GB); "full": raw_30s/audio (320 kbps, 508 GB).
    audio_quality: Literal["low", "full"] = "low"


# ---------------------------------------------------------------------------------------------
# Tags -> words. The dataset's tag names are squashed ("easylistening", "doublebass"); captions
# use the words a person would type. Unknown tags pass through unchanged.

GENRE_WORDS = {
    "acidjazz": "acid jazz", "alternativerock": "alternative rock", "bluesrock": "blues rock",
    "bossanova": "bossa nova", "classicrock": "classic rock", "darkambient": "dark ambient",
    "deephouse": "deep house", "drumnbass": "drum and bass", "easylistening": "easy listening",
    "edm": "EDM", "electroambient": "electro ambient", "electrohouse": "electro house",
    "hiphop": "hip hop", "idm": "IDM", "instrumentalhiphop": "instrumental hip hop",
    "instrumentalpop": "instrumental pop", "instrumentalrock": "instrumental rock",
    "jazzfusion": "jazz fusion", "newage": "new age", "newwave": "new wave", "popfolk": "pop folk",
    "poprock": "pop rock", "postrock": "post-rock", "punkrock": "punk rock", "rnb": "R&B",
    "rocknroll": "rock and roll", "singersongwriter": "singer-songwriter", "triphop": "trip hop",
    "worldfusion": "world fusion", "hard": "hard rock",
}
INSTRUMENT_WORDS = {
    "acousticbassguitar": "acoustic bass guitar", "acousticguitar": "acoustic guitar",
    "beat": "beats", "bell": "bells", "bongo": "bongos", "classicalguitar": "classical guitar",
    "doublebass": "double bass", "drummachine": "drum machine", "electricguitar": "electric guitar",
    "electricpiano": "electric piano", "pad": "synth pads", "pipeorgan": "pipe organ",
    "rhodes": "Rhodes piano", "voice": "vocals", "slideguitar": "slide guitar",
}
# mood/theme tags that are moods (adjectives); the rest are themes or uses.
MOOD_WORDS = {
    "calm", "cool", "dark", "deep", "dramatic", "emotional", "energetic", "epic", "fun", "funny",
    "groovy", "happy", "heavy", "hopeful", "inspiring", "meditative", "melancholic", "mellow",
    "melodic", "motivational", "positive", "powerful", "relaxing", "retro", "romantic", "sad",
    "sexy", "soft", "upbeat", "uplifting", "beautiful", "ambiental",
}
MOOD_RENAMES = {"dream": "dreamy", "ambiental": "ambient"}
TEMPO_TAGS = {"fast": "fast", "slow": "slow"}
THEME_WORDS = {
    "action": "action theme", "adventure": "adventure theme", "advertising": "advertising music",
    "background": "background music", "ballad": "ballad", "children": "music for children",
    "christmas": "Christmas music", "commercial": "commercial music", "corporate": "corporate music",
    "documentary": "documentary music", "drama": "drama theme", "film": "film music",
    "game": "video game music", "holiday": "holiday theme", "horror": "horror theme",
    "love": "love song", "movie": "movie music", "nature": "nature theme", "party": "party music",
    "soundscape": "soundscape", "space": "space theme", "sport": "sports theme",
    "summer": "summer theme", "trailer": "trailer music", "travel": "travel theme",
}


def tag_facets(tags: list[str]) -> tuple[Facets, list[str]]:
    """(Facets in words, the plain tag names) of prefixed tags like ``genre---rock``."""
    facets = Facets()
    plain: list[str] = []
    for raw in dict.fromkeys(t.strip() for t in tags):
        category, sep, name = raw.partition("---")
        name = name.strip() if sep else category.strip()
        if not name:
            continue
        plain.append(name)
        category = category.strip() if sep else ""
        if category == "genre":
            facets.genre.append(GENRE_WORDS.get(name, name))
        elif category == "instrument":
            facets.instrument.append(INSTRUMENT_WORDS.get(name, name))
        elif category == "mood/theme":
            if name in TEMPO_TAGS:
                facets.tempo.append(TEMPO_TAGS[name])
            elif name in MOOD_WORDS or name in MOOD_RENAMES:
                facets.mood.append(MOOD_RENAMES.get(name, name))
            else:
                facets.other.append(THEME_WORDS.get(name, name))
        else:
            facets.other.append(name)
    return facets, list(dict.fromkeys(plain))


# ---------------------------------------------------------------------------------------------
# Reading the published files


_LINK_TARGET = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*\.tsv")


def link_target(data: bytes) -> str | None:
    """The file name a git symlink downloaded as a file holds (``autotagging.tsv`` is 31 bytes of
    ``raw_30s_cleantags_50artists.tsv``), or None for a real TSV."""
    if len(data) > 255:
        return None
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return posixpath.basename(text) if _LINK_TARGET.fullmatch(text) else None


def read_main_tsv(meta_dir: str) -> tuple[str, bytes]:
    """(path, bytes) of the track list, following a symlink saved as text."""
    path = find_published(meta_dir, (MAIN_TSV, MAIN_LINK))
    seen = {path}
    data = storage.read_bytes(path)
    while (target := link_target(data)) is not None:
        resolved = find_published(meta_dir, target, required=False)
        if resolved is None or resolved in seen:
            raise FileNotFoundError(
                f"{path} is a git symlink saved as text (it holds only the name {target!r}); "
                f"no {target} under {meta_dir}: download {REPO_URL}/data/{MAIN_TSV}"
            )
        seen.add(resolved)
        path, data = resolved, storage.read_bytes(resolved)
    return path, data


def tsv_rows(data: bytes, name: str, rejections: Rejections | None = None) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every row after the header; ValueError for a foreign header.
    The csv module (not line splitting) reads the CRLF line endings the dataset's writer used."""
    reader = csv.reader(io.StringIO(published_text(data, name, rejections), newline=""), delimiter="\t")
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:5]] != list(HEADER[:5]):
        raise ValueError(f"{name}: header {header!r} is not {'/'.join(HEADER)}")
    for row in reader:
        if row and any(f.strip() for f in row):
            yield reader.line_num, row


_TRACK = re.compile(r"track_(\d+)")
_ARTIST = re.compile(r"artist_(\d+)")
_ALBUM = re.compile(r"album_(\d+)")
_PATH = re.compile(r"(\d{2})/(\d+)\.mp3")


@dataclass
class Track:
    id: int
    artist_id: int
    album_id: int
    path: str  # NN/<id>.mp3
    duration_s: float
    tags: list[str]  # prefixed, as published


def parse_track(row: list[str], item: str) -> Track:
    """One TSV row; ItemError naming ``item`` when it is malformed."""
    if len(row) < 5:
        raise ItemError(item, f"expected at least 5 tab-separated fields (TRACK_ID..DURATION), got {len(row)}")
    tid, artist, album, path, duration = (f.strip() for f in row[:5])
    m = _TRACK.fullmatch(tid)
    if not m:
        raise ItemError(item, f"bad TRACK_ID {tid!r} (want track_<digits>)")
    num = int(m.group(1))
    ma, mb = _ARTIST.fullmatch(artist), _ALBUM.fullmatch(album)
    if not ma or not mb:
        raise ItemError(item, f"bad ARTIST_ID/ALBUM_ID {artist!r}/{album!r}")
    mp = _PATH.fullmatch(path)
    if not mp or int(mp.group(2)) != num or int(mp.group(1)) != num % 100:
        raise ItemError(item, f"PATH {path!r} does not match TRACK_ID {tid} (want {num % 100:02d}/{num}.mp3)")
    try:
        seconds = float(duration)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ItemError(item, f"bad DURATION {duration!r}")
    tags = [t.strip() for t in row[5:] if t.strip()]
    return Track(num, int(ma.group(1)), int(mb.group(1)), path, seconds, tags)


def read_tracks(data: bytes, name: str, rejections: Rejections | None = None) -> dict[int, Track]:
    """Tracks of a published TSV by numeric id; bad rows go to ``rejections`` (or are skipped)."""
    tracks: dict[int, Track] = {}
    for line, row in tsv_rows(data, name, rejections):
        item = f"{name}:{line}"
        try:
            track = parse_track(row, item)
            if track.id in tracks:
                raise ItemError(item, f"duplicate TRACK_ID track_{track.id:07d}")
        except ItemError as err:
            if rejections is not None:
                rejections.add(err.item, err.reason)
            continue
        tracks[track.id] = track
    return tracks


def read_split_ids(data: bytes, name: str) -> list[int]:
    """Numeric track ids of a split file (only TRACK_ID is read)."""
    ids = []
    for _, row in tsv_rows(data, name):
        m = _TRACK.fullmatch(row[0].strip())
        if m:
            ids.append(int(m.group(1)))
    return ids


def find_split_files(meta_dir: str, n: int) -> dict[str, str]:
    """{part: path} of split set ``n``: ``autotagging-<part>.tsv`` inside a ``split-<n>`` folder."""
    candidates = find_all(meta_dir, "autotagging-*.tsv")
    out = {}
    for part in SPLIT_PARTS:
        name = f"autotagging-{part}.tsv"
        hits = [p for p in candidates if posixpath.basename(p) == name
                and posixpath.basename(posixpath.dirname(p)) == f"split-{n}"]
        if not hits:
            raise FileNotFoundError(f"no split-{n}/{name} under {meta_dir} (published as data/{split_file(n, part)})")
        out[part] = min(hits, key=lambda p: (p.count("/"), p))
    return out


_SHA_LINE = re.compile(r"([0-9a-fA-F]{64})\s+\*?(\S.*?)\s*")


def read_sha256_list(meta_dir: str, name: str) -> dict[str, str]:
    """{file name: sha256} of a published ``<sha256> <name>`` list; {} when absent."""
    path = find_published(meta_dir, name, required=False)
    if path is None:
        return {}
    out = {}
    for line in storage.read_bytes(path).decode("utf-8-sig").splitlines():
        m = _SHA_LINE.fullmatch(line)
        if m:
            out[m.group(2)] = m.group(1).lower()
    return out


# ---------------------------------------------------------------------------------------------
# audio_licenses.txt (MTG-Jamendo's, and the copy the Song Describer Dataset ships)

_LICENCE_PATH = re.compile(r"(?:.*/)?(\d{2})/(\d+)(?:\.[A-Za-z0-9]+)*\.mp3")
_URL = re.compile(r"https?://\S+")
_CC_URL = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)(?:/(\d+(?:\.\d+)?))?(?:/([a-z]{2}))?", re.IGNORECASE)
_ONE_LINE = re.compile(r"(?:track_)?(\d+)[\t,;| ]+(.*)")


@dataclass
class AudioLicence:
    name: str  # "CC BY-NC-SA 3.0", "Licence Art Libre", or the line as published
    url: str | None
    attribution: str | None  # "<title> by <artist>"


def licence_name(text: str) -> tuple[str, str | None]:
    """(short name, URL) of a licence line like ``Available under a Creative Commons ... license:
    http://creativecommons.org/licenses/by-nc-sa/2.5/``."""
    url_match = _URL.search(text)
    url = url_match.group(0).rstrip(".,;)") if url_match else None
    cc = _CC_URL.search(text)
    if cc:
        kind, code, version, jurisdiction = cc.groups()
        if kind.lower() == "publicdomain":
            name = "CC0" if code.lower() == "zero" else "Public Domain Mark"
        else:
            name = f"CC {code.upper()}"
        name += f" {version}" if version else ""
        name += f" {jurisdiction.upper()}" if jurisdiction else ""
        return name, url
    if "artlibre" in text.lower():
        return "Licence Art Libre", url
    plain = re.sub(r"^Available under (a |an |the )?", "", text.strip(), flags=re.IGNORECASE)
    plain = plain.split(": http")[0].strip() or text.strip()
    return plain, url


def _is_licence_line(line: str) -> bool:
    low = line.lower()
    return low.startswith("available under") or "creativecommons.org" in low or "artlibre" in low


def _attribution(line: str) -> str:
    return re.split(r"\s+from Jamendo\b", line, maxsplit=1)[0].strip()


def parse_audio_licences(text: str) -> dict[int, AudioLicence]:
    """Per-track licences by numeric Jamendo id.

    The published layout is four-line blocks: ``NN/<id>.mp3``, ``<title> by <artist> from
    Jamendo: <url>``, ``Available under ...: <licence url>``, a blank line. One-line variants
    (``<id><TAB><attribution><TAB><licence>``, as tools derived from it write) are read too;
    lines that fit neither are ignored.
    """
    blocks: dict[int, list[str]] = {}
    current: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = _LICENCE_PATH.fullmatch(line)
        if m:
            current = int(m.group(2))
            blocks[current] = []
            continue
        if current is not None:
            blocks[current].append(line)
            continue
        one = _ONE_LINE.fullmatch(line)
        if one and _is_licence_line(one.group(2)):
            fields = [f.strip() for f in re.split(r"\t", one.group(2)) if f.strip()]
            blocks[int(one.group(1))] = fields if len(fields) > 1 else [one.group(2)]
    out: dict[int, AudioLicence] = {}
    for track, lines in blocks.items():
        licence_lines = [x for x in lines if _is_licence_line(x)] or [x for x in lines[1:] if _URL.search(x)]
        if not licence_lines:
            continue
        name, url = licence_name(licence_lines[0])
        at = lines.index(licence_lines[0])
        others = lines[:at] + lines[at + 1 :]
        out[track] = AudioLicence(name, url, _attribution(others[0]) if others else None)
    return out


def read_audio_licences(meta_dir: str) -> dict[int, AudioLicence]:
    path = find_published(meta_dir, LICENCES_TXT, required=False)
    if path is None:
        return {}
    return parse_audio_licences(storage.read_bytes(path).decode("utf-8-sig", errors="replace"))


def licence_meta(lic: AudioLicence | None) -> dict:
    """The record meta of a track's audio licence: its URL and attribution, when listed."""
    if lic is None:
        return {}
    meta = {"licence_url": lic.url}
    if lic.attribution:
        meta["attribution"] = lic.attribution
    return meta


# ---------------------------------------------------------------------------------------------


def record_id(num: int) -> str:
    return f"jamendo-track_{num:07d}"


def group_key(num: int) -> str:
    """The recording key MTG-Jamendo and the Song Describer Dataset share."""
    return f"jamendo:{num}"


class JamendoSource(Source):
    """MTG-Jamendo (raw_30s autotagging set): tag captions, published splits, tar archives."""

    name: ClassVar[str] = "jamendo"
    description: ClassVar[str] = (
        "MTG-Jamendo: 55k Creative Commons full tracks with genre/instrument/mood tags, "
        "captions written from the tags; audio from the dataset's tar archives"
    )
    phase: ClassVar[int] = 1
    Options: ClassVar[type[SourceOptions]] = JamendoOptions
    published: ClassVar[tuple[PublishedFile, ...]] = _published()
    licence: ClassVar[str] = LICENCE

    def parse(self, meta_dir: str, opts: SourceOptions, rejections: Rejections) -> Iterator[Record]:
        assert isinstance(opts, JamendoOptions)
        main_path, main_data = read_main_tsv(meta_dir)
        main_name = posixpath.basename(main_path)
        tracks = read_tracks(main_data, main_name, rejections)

        splits: dict[int, str] = {}
        for part, path in find_split_files(meta_dir, opts.split).items():
            for num in read_split_ids(storage.read_bytes(path), f"split-{opts.split}/{posixpath.basename(path)}"):
                splits.setdefault(num, SPLIT_PARTS[part])  # a track in several files: test wins
        artist_splits: dict[int, set[str]] = {}
        for num, split in splits.items():
            if num in tracks:
                artist_splits.setdefault(tracks[num].artist_id, set()).add(split)

        audio_type, tar_pattern, suffix = QUALITIES[opts.audio_quality]
        tars_list, tracks_list = sha256_lists(audio_type)
        tar_sha, member_sha = read_sha256_list(meta_dir, tars_list), read_sha256_list(meta_dir, tracks_list)
        licences = read_audio_licences(meta_dir)
        base = opts.audio_base(AUDIO_BASE_URL)

        for num, track in tracks.items():
            rid = record_id(num)
            facets, plain = tag_facets(track.tags)
            captions = describe(facets, rid, n=3)
            if not captions:
                rejections.add(rid, "no captionable tags (the TAGS columns are empty)")
                continue
            split = splits.get(num)
            if split is None:
                known = artist_splits.get(track.artist_id, set())
                split = next(iter(known)) if len(known) == 1 else hashed_split(f"jamendo-artist:{track.artist_id}", opts.split_seed)
            nn = track.path.split("/")[0]
            tar = tar_pattern.format(nn=nn)
            member = f"{nn}/{num}{suffix}"
            lic = licences.get(num)
            meta = {"artist_id": track.artist_id, "album_id": track.album_id, "duration_s": track.duration_s,
                    "path": track.path, "in_split_files": num in splits, **licence_meta(lic)}
            with rejecting(rejections):
                yield make_record(
                    rid,
                    track_id=rid,
                    source=self.name,
                    split=split,
                    captions=captions,
                    tags=plain,
                    licence=f"{METADATA_LICENCE} (metadata); audio: {lic.name} (Jamendo)" if lic else LICENCE,
                    audio=ArchiveAudio(
                        urls=(f"{base}/raw_30s/{audio_type}/{tar}",),
                        member=member,
                        format="tar",
                        sha256=tar_sha.get(tar),
                        member_sha256=member_sha.get(member),
                    ),
                    group=group_key(num),
                    clip_seconds=30.0,
                    max_clips=3,
                    meta=meta,
                )
