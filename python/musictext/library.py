"""A user's own music library: its audio files, their tags, and matching by artist/title or ISRC.

Sources whose datasets publish no audio (MSD + Last.fm, AllMusic, Spotify) take the audio from
the user's library; the ``folder`` source trains on it directly. Tags are read with mutagen's
"easy" interface (ID3, Vorbis comments, MP4, FLAC, WAV's ID3 chunk alike).
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
import unicodedata
from dataclasses import dataclass, field

from musictext import storage

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".mp3", ".flac", ".ogg", ".oga", ".opus", ".wav", ".m4a", ".mp4", ".aac", ".aiff", ".aif",
                    ".wma", ".wv")
# Only the header and tag blocks are needed; 4 MB covers ID3v2 with embedded cover art.
TAG_BYTES = 4 << 20


@dataclass
class LibraryTrack:
    path: str  # relative to the library root (posix)
    artist: str = ""
    title: str = ""
    album: str = ""
    genres: list[str] = field(default_factory=list)
    moods: list[str] = field(default_factory=list)
    isrc: str = ""
    duration_s: float | None = None

    @property
    def key(self) -> str:
        return match_key(self.artist, self.title)


def normalize(text: str) -> str:
    """Lowercase ASCII words: accents, punctuation, "(feat. …)", "[remastered]" dropped."""
    text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[\(\[][^\)\]]*[\)\]]", " ", text)  # (feat. x), [live], (2011 remaster)
    text = re.sub(r"\b(feat|ft|featuring)\b.*$", " ", text)
    text = text.replace("&", " and ")
    text = re.sub(r"^the\s+", "", text.strip())
    return " ".join(re.findall(r"[a-z0-9]+", text))


def match_key(artist: str, title: str) -> str:
    return f"{normalize(artist)}|{normalize(title)}"


def list_audio(root: str) -> list[str]:
    """Audio files under ``root`` (local path or URI), relative posix paths, sorted."""
    fs, base = storage.fs_for(root)
    out = []
    for path in fs.find(base):
        if posixpath.splitext(path)[1].lower() in AUDIO_EXTENSIONS:
            rel = posixpath.relpath(path, base)
            if not any(part.startswith(".") for part in rel.split("/")):  # .Trash, ._macos files
                out.append(rel)
    return sorted(out)


def _first(tags, *names: str) -> str:
    for name in names:
        values = tags.get(name) if tags else None
        if values:
            return str(values[0]).strip()
    return ""


def _all(tags, *names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        for value in (tags.get(name) or []) if tags else []:
            out.extend(v.strip() for v in re.split(r"[;/,]", str(value)) if v.strip())
    return list(dict.fromkeys(out))


# ID3 frames -> the easy names read_tags uses.
ID3_FRAMES = {"artist": "TPE1", "albumartist": "TPE2", "title": "TIT2", "album": "TALB", "genre": "TCON",
              "mood": "TMOO", "isrc": "TSRC"}


def _id3_as_easy(tags) -> dict[str, list[str]]:
    out = {}
    for name, frame in ID3_FRAMES.items():
        if frame in tags:
            values = tags[frame].genres if frame == "TCON" else tags[frame].text
            out[name] = [str(v) for v in values]
    return out


def read_tags(root: str, rel: str) -> LibraryTrack:
    """The file's tags (empty fields when it has none or mutagen cannot read it)."""
    import mutagen

    uri = storage.join(root, rel)
    track = LibraryTrack(path=rel)
    try:
        if storage.is_local(uri):
            audio = mutagen.File(storage.local_path(uri), easy=True)
        else:
            fs, path = storage.fs_for(uri)
            with fs.open(path, "rb") as fh:
                audio = mutagen.File(io.BytesIO(fh.read(TAG_BYTES)), easy=True)
    except Exception as err:  # mutagen raises many types for damaged headers; the tags are optional
        log.info("no readable tags in %s: %s", uri, err)
        return track
    if audio is None:
        return track
    tags = audio.tags
    from mutagen.id3 import ID3

    if isinstance(tags, ID3):  # WAV/AIFF: mutagen's easy interface hands back raw ID3 frames
        tags = _id3_as_easy(tags)
    track.artist = _first(tags, "artist", "albumartist")
    track.title = _first(tags, "title")
    track.album = _first(tags, "album")
    track.genres = _all(tags, "genre")
    track.moods = _all(tags, "mood")
    track.isrc = _first(tags, "isrc").upper()
    length = getattr(getattr(audio, "info", None), "length", None)
    track.duration_s = round(float(length), 3) if length else None
    return track


def title_from_filename(rel: str) -> tuple[str, str]:
    """(artist, title) from a file named "Artist - Title.ext" (else ("", stem))."""
    stem = posixpath.splitext(posixpath.basename(rel))[0]
    stem = re.sub(r"^\d{1,3}[\s._-]+", "", stem)  # track number
    if " - " in stem:
        artist, title = stem.split(" - ", 1)
        return artist.strip(), title.strip()
    return "", stem.strip()


def scan(root: str) -> list[LibraryTrack]:
    """Every audio file under ``root`` with its tags; artist/title from the file name when
    the file has no such tags."""
    tracks = []
    for rel in list_audio(root):
        track = read_tags(root, rel)
        if not track.title:
            artist, title = title_from_filename(rel)
            track.artist = track.artist or artist
            track.title = title
        tracks.append(track)
    return tracks


class LibraryIndex:
    """Look tracks of a library up by ISRC or by normalized artist/title."""

    def __init__(self, root: str, tracks: list[LibraryTrack] | None = None):
        self.root = root
        self.tracks = scan(root) if tracks is None else tracks
        self.by_key: dict[str, LibraryTrack] = {}
        self.by_isrc: dict[str, LibraryTrack] = {}
        for t in self.tracks:
            self.by_key.setdefault(t.key, t)
            if t.isrc:
                self.by_isrc.setdefault(t.isrc, t)

    def match(self, artist: str = "", title: str = "", isrc: str = "") -> LibraryTrack | None:
        if isrc and isrc.upper() in self.by_isrc:
            return self.by_isrc[isrc.upper()]
        if title:
            return self.by_key.get(match_key(artist, title))
        return None
