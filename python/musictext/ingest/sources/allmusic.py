"""AllMusic reviews matched to the user's own music (permission-gated; phase 2, whole tracks).

AllMusic publishes no dataset and its terms do not allow copying its reviews without
permission, so this source runs only with ``permission=true`` (the user states that they have
the right to use the reviews) and only on what the user supplies:

- ``urls``: a file of AllMusic URLs, one per line (``#`` comments and blank lines skipped).
  Pages are fetched from ``base_url`` (default https://www.allmusic.com) through
  ``http.Client`` with the source's rate limit; ``<site>/robots.txt`` is read first: a URL its
  rules disallow (matched on the AllMusic path) is rejected unfetched, and a ``Crawl-delay`` or
  ``Request-rate`` slower than ``requests_per_second`` lowers the rate. The review page's HTML
  is parsed with the standard library (title, artist, genres, styles, moods, review text).
- ``export``: a CSV or JSON-lines export of reviews the user already has (fields ``url``,
  ``artist``, ``title`` and/or ``album``, ``review``, ``genres``, ``styles``, ``moods``; lists as
  JSON arrays or ``;``-separated strings). Nothing is fetched.

Ids are ``mw`` (album), ``mt`` (song) or ``mn`` (artist) + 10 digits at the end of the URL's
slug (``https://www.allmusic.com/album/kind-of-blue-mw0000191710``); a URL without one is
rejected, and so are artist pages (a biography describes no recording).

Captions: the first (up to 3) descriptive sentences of the review — sentences that talk about
the sound (instruments, tempo, mood, genre words), not the band's history — plus ``describe``
sentences from the genres, styles and moods. Audio comes from the user's library
(``library.LibraryIndex``): a song page matches one track by artist/title; an album page
matches every track whose album and artist match, one record per track with the album's
captions. Anything unmatched is rejected ("no audio in the library"). All tracks of one review
share its hashed split, so one review's sentences never sit in two splits.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

from pydantic import model_validator

from musictext import storage
from musictext.ingest.base import (
    ListContext,
    Source,
    SourceOptions,
    csv_rows,
    hashed_split,
    rejecting,
)
from musictext.ingest.describe import Facets, describe
from musictext.library import LibraryIndex, LibraryTrack, normalize
from musictext.ingest.records import PathAudio, Record, make_record, safe_id
from musictext.rejects import ItemError, Rejections

log = logging.getLogger(__name__)

SITE = "https://www.allmusic.com"
HOSTS = ("allmusic.com", "www.allmusic.com")
KINDS = {"mw": "album", "mt": "song", "mn": "artist"}
ID_AT_END = re.compile(r"(?:^|-)(m[wtn]\d{10})$")
LICENCE = "AllMusic review (used with permission); audio: the user's own library"
TERMS = (
    "source 'allmusic' needs permission=true. AllMusic publishes no dataset, and its terms of use do not "
    "allow copying or scraping its reviews without permission. Run this source only if you hold that "
    "permission (from AllMusic or the rights holder, or a licensed export of the reviews), and confirm it "
    "with the option permission=true. It then reads only the URLs you list (obeying robots.txt, its "
    "Crawl-delay and the rate limit) or your own export, and takes audio only from your library. "
    "Nothing was fetched."
)


class AllMusicOptions(SourceOptions):
    # The user confirms holding permission to use the reviews (AllMusic's terms forbid scraping).
    permission: bool = False
    # A file of AllMusic URLs, one per line; relative to --metadata when that is given.
    urls: str | None = None
    # A CSV or JSON-lines export of reviews (url, artist, title/album, review, genres, styles, moods).
    export: str | None = None
    # The user's music (local path or bucket URI), matched by artist/title (songs) or album/artist.
    library: str

    @model_validator(mode="after")
    def _one_input(self) -> AllMusicOptions:
        if (self.urls is None) == (self.export is None):
            raise ValueError("give exactly one of urls (a file of AllMusic URLs) or export (a CSV/JSONL export)")
        return self


@dataclass
class Review:
    """What a review page (or export row) says about one album or song."""

    title: str = ""
    artist: str = ""
    album: str = ""  # a song's album, when known
    genres: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    moods: list[str] = field(default_factory=list)
    text: str = ""


def parse_url(url: str) -> tuple[str, str]:
    """(kind, id) of a canonical AllMusic URL; ValueError with the reason otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() not in HOSTS:
        raise ValueError(f"not an AllMusic URL: {url!r}")
    segments = [s for s in parts.path.split("/") if s]
    match = ID_AT_END.search(segments[1]) if len(segments) >= 2 else None
    if match is None:
        raise ValueError(f"no valid AllMusic id (mw/mt/mn + 10 digits) in {url!r}")
    amid = match.group(1)
    kind = KINDS[amid[:2]]
    if segments[0] != kind:
        raise ValueError(f"{amid} is a{'n' if kind[0] in 'aeiou' else ''} {kind} id in a /{segments[0]}/ URL")
    return kind, amid


def parse_id(value: str) -> tuple[str, str]:
    """(kind, id) of a bare id (an export's ``id`` field)."""
    value = (value or "").strip()
    if not re.fullmatch(r"m[wtn]\d{10}", value):
        raise ValueError(f"no valid AllMusic id (mw/mt/mn + 10 digits): {value!r}")
    return KINDS[value[:2]], value


class AllMusicSource(Source):
    name = "allmusic"
    description = "AllMusic reviews (with permission) of albums/songs in your own library; whole tracks."
    phase = 2
    Options = AllMusicOptions
    published = ()
    licence = LICENCE

    def records(self, opts: AllMusicOptions, ctx: ListContext) -> Iterator[Record]:
        # Not a generator: without permission this raises here, before anything is read.
        return self.parse(opts.metadata or "", opts, ctx.rejections)

    def parse(self, meta_dir: str, opts: AllMusicOptions, rejections: Rejections) -> Iterator[Record]:
        if not opts.permission:
            raise ValueError(TERMS)
        return self._parse(meta_dir, opts, rejections)

    def _parse(self, meta_dir: str, opts: AllMusicOptions, rejections: Rejections) -> Iterator[Record]:
        index = LibraryIndex(opts.library)
        if opts.urls is not None:
            reviews = _from_urls(_user_file(meta_dir, opts.urls), opts, rejections)
        else:
            reviews = _from_export(_user_file(meta_dir, opts.export), rejections)
        for item, kind, amid, url, review in reviews:
            with rejecting(rejections):
                yield from _records(item, kind, amid, url, review, index, opts)


def _user_file(meta_dir: str, path: str) -> str:
    if not meta_dir or "://" in path or path.startswith("/"):
        return path
    return storage.join(meta_dir, path)


# -- records ----------------------------------------------------------------------------------

def _records(item: str, kind: str, amid: str, url: str, review: Review, index: LibraryIndex,
             opts: AllMusicOptions) -> Iterator[Record]:
    captions = review_captions(review.text)
    facets = Facets(genre=[_plain(s) for s in review.styles + review.genres], mood=[_plain(m) for m in review.moods])
    captions += describe(facets, amid, 2)
    if not captions:
        raise ItemError(item, "no review text or genre/style/mood to build a caption from")
    if not review.title:
        raise ItemError(item, f"no {kind} title on the page")
    if kind == "song":
        track = index.match(review.artist, review.title)
        tracks = [track] if track else []
    else:
        want = (normalize(review.title), normalize(review.artist))
        tracks = [t for t in index.tracks if (normalize(t.album), normalize(t.artist)) == want]
    if not tracks:
        raise ItemError(item, f"no audio in the library for {review.artist or '?'} - {review.title} ({kind})")
    split = hashed_split(f"allmusic:{amid}", opts.split_seed)
    tags = review.genres + review.styles + review.moods
    for track in sorted(tracks, key=lambda t: t.path):
        if kind == "song":
            track_id, group = f"allmusic-{amid}", f"allmusic:{amid}"
        else:
            track_id, group = _album_track_id(amid, track.path), f"allmusic:{amid}:{track.path}"
        yield make_record(
            track_id,
            track_id=track_id,
            source=AllMusicSource.name,
            split=split,
            captions=captions,
            tags=tags,
            licence=LICENCE,
            audio=PathAudio(root=index.root, path=track.path),
            group=group,
            whole_track=True,
            meta=_meta(kind, amid, url, review, track),
        )


def _album_track_id(amid: str, path: str) -> str:
    stem = safe_id(posixpath.splitext(posixpath.basename(path))[0])[:60]
    return f"allmusic-{amid}-{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def _meta(kind: str, amid: str, url: str, review: Review, track: LibraryTrack) -> dict:
    meta = {"allmusic_id": amid, "kind": kind, "artist": review.artist or track.artist, "path": track.path}
    if url:
        meta["allmusic_url"] = url
    if kind == "album":
        meta["album"] = review.title
        meta["title"] = track.title
    else:
        meta["title"] = review.title
        if review.album or track.album:
            meta["album"] = review.album or track.album
    if track.duration_s:
        meta["duration_s"] = track.duration_s
    return meta


def _plain(tag: str) -> str:
    """'Hard Bop' -> 'hard bop' inside a sentence; 'Pop/Rock' -> 'pop/rock'; 'R&B', 'IDM' kept."""
    words = [w for w in re.split(r"[\s/-]+", tag.strip()) if w]
    plain = all(w.isalpha() and w[:1].isupper() and (len(w) == 1 or not w.isupper()) for w in words)
    return tag.strip().lower() if plain else tag.strip()


# Words that make a sentence about the music rather than about the artist's career.
DESCRIPTIVE = re.compile(
    r"\b(sound\w*|sonic\w*|guitar\w*|piano\w*|keyboard\w*|organ\w*|synth\w*|drum\w*|percussi\w*|bass\w*|"
    r"horn\w*|sax\w*|trumpet\w*|trombone\w*|violin\w*|cello\w*|string\w*|orchestra\w*|choir\w*|vocal\w*|"
    r"voice\w*|sing(?:s|er|ers|ing)?|sang|sung|croon\w*|melod\w*|harmon\w*|rhythm\w*|groove\w*|beats?|tempo\w*|riff\w*|"
    r"chord\w*|hooks?|chorus\w*|ballad\w*|arrange\w*|production|produced|mix\w*|reverb\w*|distort\w*|"
    r"acoustic|electric|electronic|ambient|atmospher\w*|mood\w*|slow\w*|fast|upbeat|uptempo|mid-tempo|"
    r"mellow|gentle|soft|loud|quiet|dark|bright|warm|lush|sparse|dense|noisy|catchy|dreamy|moody|"
    r"melanchol\w*|joyful|aggressive|relaxed|intimate|swing\w*|funk\w*|jazz\w*|blues\w*|soul\w*|folk\w*|"
    r"rock\w*|pop|punk\w*|metal|hip-hop|rap\w*|techno|house|disco|dance\w*|danceable|reggae|country|"
    r"classical|gospel|r&b)\b",
    re.IGNORECASE,
)
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "no", "vol", "feat", "ft", "etc", "approx"}
# A sentence ends at . ! or ? (and any closing quotes) before a space and a capital or digit.
_END = re.compile(r"[.!?][\"'\u201d\u2019)]*(?=\s+[\"'\u201c\u2018(]?[A-Z0-9])")


def sentences(text: str) -> list[str]:
    """Sentences of prose; no split after "Mr.", "vs.", "Vol." or an initial ("J.J. Johnson")."""
    text = re.sub(r"\s+", " ", text or "").strip()
    out: list[str] = []
    start = 0
    for match in _END.finditer(text):
        word = re.split(r"[\s(]", text[start : match.start()])[-1].lower()
        if match.group()[0] == "." and (word in _ABBREVIATIONS or re.fullmatch(r"([a-z]\.)*[a-z]", word)):
            continue
        out.append(text[start : match.end()].strip())
        start = match.end()
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


def review_captions(text: str, limit: int = 3) -> list[str]:
    """The first ``limit`` descriptive sentences of a review (5 to 60 words each)."""
    picked = []
    for sentence in sentences(text):
        words = len(sentence.split())
        if 5 <= words <= 60 and DESCRIPTIVE.search(sentence):
            picked.append(sentence)
            if len(picked) == limit:
                break
    return picked


# -- URL list: robots.txt, pages --------------------------------------------------------------

def _from_urls(uri: str, opts: AllMusicOptions, rejections: Rejections):
    from musictext.ingest.http import USER_AGENT, Client  # requests only when pages are fetched

    text = storage.read_bytes(uri).decode("utf-8-sig", "replace")
    name = posixpath.basename(uri)
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        url = line.strip()
        if url and not url.startswith("#"):
            entries.append((f"{name}:{number}", url))
    site = (opts.base_url or SITE).rstrip("/")
    client = Client.for_options(opts)
    robots, why = _robots(client, site)
    delay = max(robots.crawl_delay(USER_AGENT) or 0.0, _rate_interval(robots.request_rate(USER_AGENT)))
    if delay > client.limiter.interval:
        log.info("allmusic: robots.txt asks for %.2f s between requests; rate lowered to match", delay)
        client.limiter.interval = float(delay)
    seen: dict[str, str] = {}
    for line, url in entries:
        try:
            kind, amid = parse_url(url)
            if amid in seen:
                rejections.add(line, f"{amid} is listed twice (first as {seen[amid]})")
                continue
            seen[amid] = url
            if kind == "artist":
                raise ValueError(f"{amid} is an artist page: a biography reviews no recording (list album or "
                                 "song URLs)")
        except ValueError as err:
            rejections.add(url, str(err))
            continue
        path = urlsplit(url).path
        if not robots.can_fetch(USER_AGENT, SITE + path):
            rejections.add(url, f"disallowed by robots.txt{why}")
            continue
        try:
            html = client.get_bytes(site + path, item=url).decode("utf-8", "replace")
        except ItemError as err:
            rejections.add(err.item, err.reason)
            continue
        yield url, kind, amid, url, parse_page(html)


def _rate_interval(rate) -> float:
    return rate.seconds / rate.requests if rate and rate.requests else 0.0


def _robots(client, site: str) -> tuple[RobotFileParser, str]:
    """The site's robots rules, and a note for rejections when the file could not be read.

    As RFC 9309 says: a 4xx answer (no robots.txt) allows everything, except 401/403 which
    disallow everything; an unreachable file (5xx or network, after retries) disallows everything.
    """
    robots = RobotFileParser(f"{site}/robots.txt")
    try:
        body = client.get_bytes(f"{site}/robots.txt", item="robots.txt")
    except ItemError as err:
        code = getattr(err, "status", None)
        if code is not None and 400 <= code < 500 and code not in (401, 403):
            robots.allow_all = True
            return robots, ""
        robots.disallow_all = True
        log.warning("allmusic: robots.txt unreadable (%s): every URL is disallowed", err.reason)
        return robots, f" (robots.txt unreadable: {err.reason})"
    robots.parse(body.decode("utf-8", "replace").splitlines())
    return robots, ""


# -- HTML -------------------------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
_BLOCK = {"p", "div", "br", "li", "section", "h1", "h2", "h3", "h4", "tr", "td", "blockquote"}


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str]
    parent: _Node | None = None
    children: list = field(default_factory=list)  # _Node or str

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self) -> Iterator[_Node]:
        for child in self.children:
            if isinstance(child, _Node):
                yield child
                yield from child.walk()

    def find(self, pred) -> _Node | None:
        return next((n for n in self.walk() if pred(n)), None)

    def text(self) -> str:
        parts: list[str] = []
        self._text(parts)
        return re.sub(r"\s+", " ", "".join(parts)).strip()

    def _text(self, parts: list[str]) -> None:
        for child in self.children:
            if isinstance(child, str):
                parts.append(child)
            elif child.tag not in ("script", "style"):
                if child.tag in _BLOCK:
                    parts.append(" ")
                child._text(parts)
                if child.tag in _BLOCK:
                    parts.append(" ")


class _Tree(HTMLParser):
    """A forgiving element tree: void elements, stray end tags and unclosed <p> are tolerated."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = _Node("#document", {})
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        if tag == "p" and self.current.tag == "p":
            self.current = self.current.parent
        node = _Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in _VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(_Node(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def _has_class(*names: str):
    return lambda n: bool(n.classes() & set(names))


def _links(container: _Node | None) -> list[str]:
    if container is None:
        return []
    found = [a.text() for a in container.walk() if a.tag == "a"]
    if not found:  # moods as <span class="mood">Cool</span> without links
        found = [s.text() for s in container.walk() if s.classes() & {"mood", "style", "genre"}]
    return list(dict.fromkeys(t for t in found if t))


def _json_ld(root: _Node) -> dict:
    for node in root.walk():
        if node.tag == "script" and node.attrs.get("type", "").lower() == "application/ld+json":
            try:
                data = json.loads("".join(c for c in node.children if isinstance(c, str)))
            except json.JSONDecodeError:
                continue
            for obj in data if isinstance(data, list) else [data]:
                if isinstance(obj, dict) and obj.get("@type") in ("MusicAlbum", "MusicRecording"):
                    return obj
    return {}


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def parse_page(html: str) -> Review:
    """Title, artist, genres, styles, moods and review text of an AllMusic album or song page.

    The page's own markup first (``h1.album-title``/``h1.song-title``, ``h2.album-artist``/
    ``h2.song-artist``, ``div.genre``, ``div.styles``, ``section.moods``, the review's
    ``itemprop="reviewBody"`` or ``div.text``), then its JSON-LD and Open Graph tags.
    """
    tree = _Tree()
    tree.feed(html)
    tree.close()
    root = tree.root
    ld = _json_ld(root)
    review = Review()
    title = root.find(lambda n: n.tag == "h1" and (n.classes() & {"album-title", "song-title"}
                                                   or n.attrs.get("id") in ("albumTitle", "songTitle")))
    title = title or root.find(lambda n: n.tag == "h1" and n.attrs.get("itemprop") == "name")
    review.title = title.text() if title else str(ld.get("name") or "").strip()
    if not review.title:
        og = root.find(lambda n: n.tag == "meta" and n.attrs.get("property") == "og:title")
        review.title = (og.attrs.get("content", "").split(" - ")[0].strip()) if og else ""
    artist = root.find(lambda n: n.classes() & {"album-artist", "song-artist"}
                       or n.attrs.get("id") in ("albumArtists", "songArtists"))
    if artist:
        review.artist = artist.text()
    else:
        by = ld.get("byArtist")
        by = by[0] if isinstance(by, list) and by else by
        review.artist = str(by.get("name") if isinstance(by, dict) else by or "").strip()
    review.genres = _links(root.find(_has_class("genre", "genres"))) or _as_list(ld.get("genre"))
    review.styles = _links(root.find(_has_class("styles")))
    review.moods = _links(root.find(_has_class("moods")))
    body = root.find(lambda n: n.attrs.get("itemprop") == "reviewBody")
    if body is None:
        section = root.find(lambda n: "review" in n.classes() or n.attrs.get("id") == "review")
        body = section.find(_has_class("text")) if section else None
    if body is not None:
        review.text = body.text()
    else:
        ld_review = ld.get("review")
        ld_review = ld_review[0] if isinstance(ld_review, list) and ld_review else ld_review
        review.text = str(ld_review.get("reviewBody") or "") if isinstance(ld_review, dict) else ""
    return review


# -- export -----------------------------------------------------------------------------------

_FIELDS = {
    "url": ("url", "allmusic_url", "link"),
    "id": ("id", "allmusic_id"),
    "artist": ("artist", "album_artist", "artist_name"),
    "title": ("title", "song", "track", "song_title"),
    "album": ("album", "album_title"),
    "review": ("review", "review_text", "review_body", "text", "body"),
    "genres": ("genres", "genre"),
    "styles": ("styles", "style"),
    "moods": ("moods", "mood"),
}


def _field(row: dict, name: str):
    for key in _FIELDS[name]:
        if key in row and row[key] not in (None, ""):
            return row[key]
    return None


def _tag_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(";") if v.strip()]


def _export_rows(uri: str, rejections: Rejections) -> Iterator[tuple[str, dict]]:
    raw = storage.read_bytes(uri)
    name = posixpath.basename(uri)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        rejections.add(name, f"file rejected: not valid UTF-8 (byte offset {err.start})")
        return
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array of objects
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            rejections.add(name, f"file rejected: not valid JSON ({err.msg})")
            return
        for n, row in enumerate(rows if isinstance(rows, list) else [], 1):
            yield f"{name}:{n}", row
    elif stripped.startswith("{") or uri.lower().endswith((".jsonl", ".ndjson")):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield f"{name}:{n}", json.loads(line)
                except json.JSONDecodeError as err:
                    rejections.add(f"{name}:{n}", f"not valid JSON ({err.msg})")
    else:
        lines = io.StringIO(text, newline="")
        reader = csv.DictReader(lines)
        reader.fieldnames = [(f or "").strip().lower() for f in reader.fieldnames or []]
        for first, row in csv_rows(reader, name, rejections):
            yield f"{name}:{first}", row


def _from_export(uri: str, rejections: Rejections):
    seen: dict[str, str] = {}
    for item, row in _export_rows(uri, rejections):
        try:
            if not isinstance(row, dict):
                raise ValueError("row is not an object")
            row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
            url = str(_field(row, "url") or "").strip()
            if url:
                kind, amid = parse_url(url)
            elif _field(row, "id"):
                kind, amid = parse_id(str(_field(row, "id")))
            else:
                raise ValueError("no url or id")
            if amid in seen:
                raise ValueError(f"{amid} is listed twice (first at {seen[amid]})")
            seen[amid] = item
            if kind == "artist":
                raise ValueError(f"{amid} is an artist page: a biography reviews no recording")
            title, album = str(_field(row, "title") or "").strip(), str(_field(row, "album") or "").strip()
            review = Review(
                title=(album or title) if kind == "album" else (title or album),
                artist=str(_field(row, "artist") or "").strip(),
                album=album if kind == "song" else "",
                genres=_tag_list(_field(row, "genres")),
                styles=_tag_list(_field(row, "styles")),
                moods=_tag_list(_field(row, "moods")),
                text=str(_field(row, "review") or ""),
            )
        except ValueError as err:
            rejections.add(item, str(err))
            continue
        yield item, kind, amid, url, review
