"""Fixture of the ``allmusic`` source, and a local HTTP server for its review pages.

AllMusic publishes no dataset: what the user supplies is a URL list or an export, and the audio
is their own library. ``make_fixture(root)`` writes

- ``root/metadata/urls.txt``: canonical AllMusic URLs (``/album/<slug>-mw<10 digits>``,
  ``/song/<slug>-mt…``, ``/artist/<slug>-mn…``), a comment and a blank line, plus bad ones (a
  short id, another site, an artist page, a duplicate, a robots-disallowed page, a 404);
- ``root/metadata/export.csv`` and ``export.jsonl``: the same reviews as an export;
- ``root/site/``: an AllMusic-like site (served at ``{base}/site``): ``robots.txt`` with a
  Disallow and a ``Crawl-delay: 1``, and review pages in AllMusic's markup (``h1.album-title``,
  ``h2.album-artist``, ``div.genre``, ``div.styles``, ``section.moods`` of ``span.mood``, the
  review in ``div.text[itemprop=reviewBody]``, JSON-LD, scripts with ``<`` in them);
- ``root/library/``: the user's music (FLAC/MP3 with tags; one dangling "Artist - Title.mp3"
  symlink, matched by its name, whose fetch fails).

``serve(root)`` serves ``root`` on 127.0.0.1 (``tests.http_server.serve_handler``) and records each
request's path and ``time.monotonic()`` (server side), for the robots and rate-limit tests.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import pathlib
import time

from tests.datasets.folder import write_track
from tests.http_server import serve_handler

ALBUM = "https://www.allmusic.com/album/night-sessions-mw0000123456"
ENGINE = "https://www.allmusic.com/song/engine-mt0001234567"
STATIC = "https://www.allmusic.com/song/static-mt0002222222"
LOST = "https://www.allmusic.com/song/lost-song-mt0007654321"
SECRET = "https://www.allmusic.com/album/secret-demos-mw0000999999"
GONE = "https://www.allmusic.com/album/gone-mw0000404040"
SHORT_ID = "https://www.allmusic.com/album/bad-id-mw12345"
ARTIST = "https://www.allmusic.com/artist/miles-quartet-mn0000111111"
ELSEWHERE = "https://example.com/album/night-sessions-mw0000123456"

ROBOTS = """# robots.txt of an AllMusic-like test site
User-agent: *
Disallow: /album/secret-
Disallow: /search/
Crawl-delay: 1

User-agent: GPTBot
Disallow: /
"""

ALBUM_REVIEW = (
    "Recorded in a single evening in 1997, Night Sessions was the quartet's fourth album for the label. "
    "The slow, brushed ballads are built on warm upright bass and sparse, lyrical piano lines. "
    "Its mid-tempo swing numbers feature a breathy tenor saxophone over a relaxed groove. "
    "Few records of the decade sound this intimate. "
    "Drummer J.J. Carter later joined Mr. Brown's big band. "
    "The band toured Europe the following year."
)
ENGINE_REVIEW = (
    "\u201cEngine\u201d opens with a pounding drum pattern and a distorted guitar riff that never lets up. "
    "The chorus is shouted by the whole band over stacked power chords. "
    "It was the group's biggest hit."
)

_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - {artist} | {kind_title} | AllMusic</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta property="og:title" content="{title} - {artist} | {kind_title} | AllMusic">
<meta property="og:type" content="music.{og_kind}">
<meta property="og:url" content="{url}">
<link rel="canonical" href="{url}">
<link rel="stylesheet" href="/css/allmusic.min.css?v=2024">
<script type="application/ld+json">{ld}</script>
<script>
  var googletag = googletag || {{}}; var slots = [];
  if (window.innerWidth < 768 && slots.length <= 2) {{ slots.push("<div class='ad mobile'>"); }}
</script>
</head>
<body class="{kind}">
<header id="header"><nav class="main-nav"><ul>
  <li><a href="https://www.allmusic.com/discover">Discover</a></li>
  <li><a href="https://www.allmusic.com/newreleases">New Releases</a></li>
  <li><a href="https://www.allmusic.com/genres">Genres</a></li>
</ul></nav><form id="search" action="/search/all/"><input type="text" name="term"></form></header>
<div id="cmn_wrap"><div class="content-container">
"""

_FOOT = """</div></div>
<footer id="footer"><p>&copy; 2024 AllMusic, Netaktion LLC. All rights reserved.</p>
<p><a href="/privacy">Privacy Policy</a> | <a href="/terms">Terms of Use</a></p></footer>
</body>
</html>
"""


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _links(kind: str, names: list[str]) -> str:
    return "".join(f'<a href="https://www.allmusic.com/{kind}/{n.lower().replace(" ", "-")}-ma0000002{i:03d}">'
                   f"{_esc(n)}</a>" for i, n in enumerate(names))


def review_page(kind: str, url: str, title: str, artist: str, genres: list[str], styles: list[str],
                moods: list[str], review: str | None, author: str = "Thom Jurek", markup: bool = True) -> str:
    """An AllMusic-style album or song page. ``markup=False`` leaves title and artist to the
    page's JSON-LD and Open Graph tags only."""
    ld = {"@context": "http://schema.org", "@type": "MusicAlbum" if kind == "album" else "MusicRecording",
          "name": title, "byArtist": {"@type": "MusicGroup", "name": artist}, "url": url}
    head = _HEAD.format(title=_esc(title), artist=_esc(artist), kind_title=kind.title(),
                        og_kind="album" if kind == "album" else "song", url=url, kind=kind,
                        ld=json.dumps(ld))
    sidebar = ['<div class="sidebar"><section class="basic-info">',
               '<div class="release-date"><h4>Release Date</h4><span>March 3, 1998</span></div>',
               '<div class="duration"><h4>Duration</h4><span>44:12</span></div>']
    if genres:
        sidebar.append(f'<div class="genre"><h4>Genre</h4><div>{_links("genre", genres)}</div></div>')
    if styles:
        sidebar.append(f'<div class="styles"><h4>Styles</h4><div>{_links("style", styles)}</div></div>')
    sidebar.append("</section>")
    if moods:
        spans = "".join(f'<span class="mood"><a href="https://www.allmusic.com/mood/{m.lower()}-xa0000000{i:03d}">'
                        f"{_esc(m)}</a></span>" for i, m in enumerate(moods))
        sidebar.append(f'<section class="moods"><h4>{kind.title()} Moods</h4>{spans}</section>')
    sidebar.append('<section class="themes"><h4>Themes</h4><span class="theme"><a href="#">Late Night</a>'
                   "</span></section><div class=\"ad-container\"><div id=\"ad_300x250\"></div></div></div>")
    content = ['<div class="content">']
    if markup:
        content.append(f'<header><hgroup><h2 class="{kind}-artist" itemprop="byArtist"><span itemprop="name">'
                       f'<a href="https://www.allmusic.com/artist/x-mn0000111111">{_esc(artist)}</a></span></h2>'
                       f'<h1 class="{kind}-title" itemprop="name">\n  {_esc(title)}\n</h1></hgroup></header>')
    if review:
        paragraphs = review.rsplit(". ", 1)  # two paragraphs, the second unclosed, as in old pages
        body = f"<p>{_esc(paragraphs[0])}.</p>\n<p>{_esc(paragraphs[1])}" if len(paragraphs) == 2 else f"<p>{review}</p>"
        body = body.replace("Night Sessions", "<i>Night Sessions</i>", 1)
        content.append(f'<section class="review read-more"><h3>AllMusic Review by <span class="review-author '
                       f'headline-review-author"><a href="#">{author}</a></span></h3>'
                       f'<div class="allmusic-rating rating-allmusic-9">9</div>'
                       f'<div class="text" itemprop="reviewBody">\n{body}\n</div></section>')
    if kind == "album":
        content.append('<section class="track-listing"><h3>Track Listing</h3><table><tbody>'
                       '<tr class="track"><td class="tracknum">1</td><td class="title-composer"><div class="title">'
                       '<a href="https://www.allmusic.com/song/blue-night-mt0001111111">Blue Night</a></div></td>'
                       '<td class="time">5:31</td></tr><tr class="track"><td class="tracknum">2</td>'
                       '<td class="title-composer"><div class="title"><a href="#">Smoke Rings</a></div></td>'
                       '<td class="time">6:02</td></tr></tbody></table></section>')
    content.append("</div>")
    return head + "\n".join(sidebar) + "\n" + "\n".join(content) + "\n" + _FOOT


def _site(site: pathlib.Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    (site / "robots.txt").write_text(ROBOTS)
    pages = {
        ALBUM: review_page("album", ALBUM, "Night Sessions", "Miles Quartet", ["Jazz"], ["Hard Bop", "Modal Music"],
                           ["Nocturnal", "Relaxed", "Sophisticated"], ALBUM_REVIEW),
        ENGINE: review_page("song", ENGINE, "Engine", "Thunder Road Band", ["Pop/Rock"], ["Hard Rock", "Arena Rock"],
                            ["Aggressive", "Rousing"], ENGINE_REVIEW, author="Stephen Thomas Erlewine"),
        STATIC: review_page("song", STATIC, "Static", "Noise Unit", ["Electronic"], [], ["Harsh"], None, markup=False),
        LOST: review_page("song", LOST, "Lost Song", "Nobody Known", ["Folk"], [], ["Wistful"],
                          "A quiet acoustic guitar carries a wistful melody from start to end."),
        SECRET: review_page("album", SECRET, "Secret Demos", "Miles Quartet", ["Jazz"], [], [], "Never fetched."),
    }
    for url, html in pages.items():
        path = site / url.split("allmusic.com/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")


def _library(lib: pathlib.Path) -> None:
    write_track(lib / "Miles Quartet" / "Night Sessions" / "01 Blue Night.flac", 6.0, 196.0,
                {"title": "Blue Night", "artist": "Miles Quartet", "album": "Night Sessions", "genre": "Jazz"})
    write_track(lib / "Miles Quartet" / "Night Sessions" / "02 Smoke Rings.mp3", 6.0, 247.0,
                {"title": "Smoke Rings", "artist": "Miles Quartet", "album": "Night Sessions (Remastered)"})
    write_track(lib / "Miles Quartet" / "Other Album" / "01 Elsewhere.flac", 6.0, 294.0,
                {"title": "Elsewhere", "artist": "Miles Quartet", "album": "Other Album"})
    write_track(lib / "Thunder Road Band - Engine.mp3", 6.0, 330.0,
                {"title": "Engine (2011 Remaster)", "artist": "Thunder Road Band"})
    # A file moved to another disk (a dangling symlink): matched by its "Artist - Title" name,
    # no tags; its fetch must fail.
    (lib / "Noise Unit - Static.mp3").symlink_to("../elsewhere/Noise Unit - Static.mp3")


def _metadata(meta: pathlib.Path) -> None:
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "urls.txt").write_text("\n".join([
        "# my AllMusic reviews (permission granted by the rights holder)",
        ALBUM, ENGINE, "", STATIC, LOST, SECRET, GONE, SHORT_ID, ARTIST, ELSEWHERE, ENGINE + "  ",
    ]) + "\n")
    header = "url,artist,title,album,review,genres,styles,moods"
    csv_rows = [
        header,
        f'{ALBUM},Miles Quartet,,Night Sessions,"{ALBUM_REVIEW}",Jazz,Hard Bop;Modal Music,'
        "Nocturnal;Relaxed;Sophisticated",
        f'{ENGINE},Thunder Road Band,Engine,,"{ENGINE_REVIEW}",Pop/Rock,Hard Rock; Arena Rock,Aggressive;Rousing',
        "https://www.allmusic.com/album/whatever,Someone,,Whatever,Great.,Rock,,",
        'https://www.allmusic.com/song/quiet-one-mt0004444444,Thunder Road Band,Quiet One,,,,,',
        f'{LOST},Nobody Known,Lost Song,,"A quiet acoustic guitar carries a wistful melody,\nstart to end.",Folk,,',
        f"{ARTIST},Miles Quartet,,,,Jazz,,",
    ]
    (meta / "export.csv").write_bytes(("\r\n".join(csv_rows) + "\r\n").encode("utf-8"))
    jsonl = [
        {"url": ALBUM, "artist": "Miles Quartet", "album": "Night Sessions", "review": ALBUM_REVIEW,
         "genres": ["Jazz"], "styles": ["Hard Bop", "Modal Music"], "moods": ["Nocturnal", "Relaxed", "Sophisticated"]},
        {"url": ENGINE, "artist": "Thunder Road Band", "title": "Engine", "review": ENGINE_REVIEW,
         "genres": ["Pop/Rock"], "styles": ["Hard Rock", "Arena Rock"], "moods": ["Aggressive", "Rousing"]},
        {"id": "mt0002222222", "artist": "Noise Unit", "title": "Static", "genres": "Electronic", "moods": "Harsh"},
    ]
    lines = [json.dumps(r, ensure_ascii=False) for r in jsonl] + ["{broken json"]
    (meta / "export.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_fixture(root: pathlib.Path) -> dict:
    """The URL-list run (see the module docstring); ``expected`` as the harness reads it."""
    _site(root / "site")
    _library(root / "library")
    _metadata(root / "metadata")
    album_tracks = ["Miles Quartet/Night Sessions/01 Blue Night.flac", "Miles Quartet/Night Sessions/02 Smoke Rings.mp3"]
    from musictext.ingest.base import hashed_split
    from musictext.ingest.sources.allmusic import _album_track_id

    album_ids = [_album_track_id("mw0000123456", p) for p in album_tracks]
    return {
        "options": {"permission": True, "urls": str(root / "metadata" / "urls.txt"), "library": str(root / "library"),
                    "base_url": "{base}/site", "requests_per_second": 20},
        "expected": {
            "records": 4,
            "album_ids": album_ids,
            "rejected": {
                LOST: "no audio in the library",
                SECRET: "disallowed by robots.txt",
                GONE: "HTTP 404",
                SHORT_ID: "no valid AllMusic id",
                ARTIST: "artist page",
                ELSEWHERE: "not an AllMusic URL",
                "urls.txt:12": "mt0001234567 is listed twice",
            },
            "splits": {
                **{tid: hashed_split("allmusic:mw0000123456", 0) for tid in album_ids},
                "allmusic-mt0001234567": hashed_split("allmusic:mt0001234567", 0),
                "allmusic-mt0002222222": hashed_split("allmusic:mt0002222222", 0),
            },
            "audio_fail": {"allmusic-mt0002222222": "not found"},  # the dangling symlink
            "fetched": ["/site/robots.txt", "/site/album/night-sessions-mw0000123456", "/site/song/engine-mt0001234567",
                        "/site/song/static-mt0002222222", "/site/song/lost-song-mt0007654321",
                        "/site/album/gone-mw0000404040"],
            "crawl_delay": 1.0,
        },
    }


def make_export_fixture(root: pathlib.Path, name: str = "export.csv") -> dict:
    """The export run (``export.csv`` or ``export.jsonl``): nothing is fetched."""
    fx = make_fixture(root)
    options = {"permission": True, "export": str(root / "metadata" / name), "library": str(root / "library")}
    expected = {
        "export.csv": {
            "records": 3,
            "rejected": {"export.csv:4": "no valid AllMusic id", "export.csv:5": "no review text",
                         "export.csv:6": "no audio in the library", "export.csv:8": "artist page"},
        },
        "export.jsonl": {"records": 4, "rejected": {"export.jsonl:4": "not valid JSON"}},
    }[name]
    splits = {k: v for k, v in fx["expected"]["splits"].items() if expected["records"] == 4 or "mt0002222222" not in k}
    return {"options": options, "expected": {**expected, "album_ids": fx["expected"]["album_ids"], "splits": splits,
                                             "audio_fail": {}}}


class _Handler(http.server.SimpleHTTPRequestHandler):
    log: list  # (path, monotonic time), set per server
    status: dict  # path -> HTTP status to answer instead of the file

    def guess_type(self, path):
        return "text/plain" if str(path).endswith(".txt") else "text/html; charset=utf-8"

    def do_GET(self):
        self.log.append((self.path, time.monotonic()))
        if self.path in self.status:
            self.send_error(self.status[self.path])
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(root: pathlib.Path, status: dict[str, int] | None = None):
    """Serve ``root`` on 127.0.0.1; yields (base URL, [(path, monotonic time), ...]). ``status``:
    paths answered with that HTTP status instead of the file."""
    log: list = []
    handler = type("Handler", (_Handler,), {"log": log, "status": dict(status or {})})
    with serve_handler(functools.partial(handler, directory=str(root))) as (base, _):
        yield base, log
