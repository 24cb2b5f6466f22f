"""A user's library and Spotify track list, and a local stand-in for the Spotify Web API.

``make_fixture`` writes ``library/`` (click tracks at known tempi over pure-tone chords, tagged
with mutagen; a file named "Artist - Title.mp3" without tags; a FLAC whose tag blocks are intact
but whose audio frames are garbage; a garbage ".mp3"; a dangling symlink) and ``metadata/tracks.csv`` /
``metadata/tracks.jsonl`` (the user's export: ``spotify_id`` or ``uri``, artist, title, isrc).
Its ``options`` run library mode (no ``tracks``: no API, no credentials), so a plain static
server is enough; the API tests use ``SpotifyMock`` and ``api_options``.

``SpotifyMock`` implements, on 127.0.0.1, the client-credentials token endpoint (form body,
Basic auth), ``/v1/tracks``, ``/v1/artists`` and ``/v1/audio-features`` (Bearer token, batch
limits 50/50/100, ``null`` for unknown ids; ``features_status=403`` answers as deprecated
endpoints do for new apps) and an OpenAI-compatible ``/llm/v1/chat/completions``. Every
request is recorded.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit

import numpy as np
import soundfile as sf

from tests.http_server import send_json, serve_handler

SR = 22050
SECONDS = 8.0
CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"
TOKEN = "BQD-test-access-token"

# Spotify ids (22 base62 characters).
CLICK = "4uLU6hMCjMI75M1A2tKUQC"  # "Metronome 120 - 2011 Remaster": matched by ISRC only
AURORA = "1301WleyT98MSxVHPZCA6M"  # two artists; audio features with key -1
PINE = "3n3Ppam7vgaVa1iaRUc9Lp"  # features null -> local; library file named "Artist - Title"
BROKEN = "7ouMYWpwJ422jRcDASZB7P"  # matched to the FLAC with garbage frames
GHOST = "2takcwOaAZWiXQijPHIx7B"  # on Spotify, not in the library -> rejected as unmatched
GONE = "5ghIJDpPoe3CfHMGu71E6T"  # matched to a dangling symlink: its fetch fails
UNKNOWN = "0000000000000000000000"  # Spotify answers null and the row has no title -> rejected

ARTISTS = {
    "0ClickBandArtistId0000": {"id": "0ClickBandArtistId0000", "name": "Click Band",
                               "genres": ["minimal techno", "electronica"]},
    "0AuroraLaneArtistId000": {"id": "0AuroraLaneArtistId000", "name": "Aurora Lane",
                               "genres": ["synthwave", "retrowave"]},
    "0GuestStarArtistId0000": {"id": "0GuestStarArtistId0000", "name": "Guest Star", "genres": ["dance pop"]},
    "0PineHollowArtistId000": {"id": "0PineHollowArtistId000", "name": "Pine Hollow", "genres": ["indie folk"]},
    "0StaticNoiseArtistId00": {"id": "0StaticNoiseArtistId00", "name": "Static Noise", "genres": ["noise rock"]},
    "0GhostArtistArtistId00": {"id": "0GhostArtistArtistId00", "name": "Ghost Artist", "genres": ["pop"]},
    "0GoneBandArtistId00000": {"id": "0GoneBandArtistId00000", "name": "Gone Band", "genres": ["indie rock"]},
}


def _track(sid: str, name: str, artist_ids: list[str], album: str, isrc: str, popularity: int) -> dict:
    return {"id": sid, "name": name, "type": "track", "uri": f"spotify:track:{sid}", "duration_ms": 8000,
            "popularity": popularity, "explicit": False, "external_ids": {"isrc": isrc},
            "album": {"name": album, "release_date": "2011-05-02", "album_type": "album"},
            "artists": [{"id": a, "name": ARTISTS[a]["name"], "type": "artist"} for a in artist_ids]}


CATALOG = {
    CLICK: _track(CLICK, "Metronome 120 - 2011 Remaster", ["0ClickBandArtistId0000"], "Clicks", "USRC17607839", 41),
    AURORA: _track(AURORA, "Night Drive", ["0AuroraLaneArtistId000", "0GuestStarArtistId0000"], "Neon",
                   "GBAYE0601498", 63),
    PINE: _track(PINE, "Campfire", ["0PineHollowArtistId000"], "Woods", "", 12),
    BROKEN: _track(BROKEN, "Broken Record", ["0StaticNoiseArtistId00"], "Hiss", "QZES71982312", 5),
    GHOST: _track(GHOST, "Missing Song", ["0GhostArtistArtistId00"], "Gone", "USUM71703861", 80),
    GONE: _track(GONE, "Vanished", ["0GoneBandArtistId00000"], "Away", "", 3),
}
CATALOG[GONE]["external_ids"] = {}
CATALOG[PINE]["external_ids"] = {}


def _features(sid: str, **values) -> dict:
    base = {"id": sid, "type": "audio_features", "uri": f"spotify:track:{sid}", "duration_ms": 8000,
            "time_signature": 4, "speechiness": 0.04, "liveness": 0.1, "acousticness": 0.1,
            "instrumentalness": 0.0, "danceability": 0.5, "valence": 0.5, "energy": 0.5, "loudness": -8.0,
            "track_href": f"https://api.spotify.com/v1/tracks/{sid}",
            "analysis_url": f"https://api.spotify.com/v1/audio-analysis/{sid}"}
    return base | values


FEATURES = {
    CLICK: _features(CLICK, tempo=120.02, key=0, mode=1, energy=0.86, valence=0.74, danceability=0.81,
                     instrumentalness=0.92, loudness=-6.2, acousticness=0.01),
    AURORA: _features(AURORA, tempo=100.1, key=-1, mode=0, energy=0.55, valence=0.25, danceability=0.6),
    PINE: None,
    BROKEN: _features(BROKEN, tempo=150.3, key=5, mode=0, energy=0.95, valence=0.2, loudness=-3.1),
    GHOST: _features(GHOST, tempo=96.0, key=7, mode=1),
    GONE: _features(GONE, tempo=132.0, key=2, mode=1, energy=0.7, valence=0.4),
}

# Library files: path -> (tags or None, bpm, chord frequencies in Hz).
C_MAJOR = (261.63, 329.63, 392.00)
A_MINOR = (220.00, 261.63, 329.63)
G_MAJOR = (196.00, 246.94, 293.66)
LIBRARY = {
    "Click Band/Clicks/01 Metronome 120.flac": (
        {"artist": "Click Band", "title": "Metronome 120", "isrc": "USRC17607839"}, 120.0, C_MAJOR),
    "Aurora Lane/Neon/02 Night Drive.mp3": (
        {"artist": "Aurora Lane", "title": "Night Drive (feat. Guest Star)", "genre": "Synthwave",
         "mood": "Dreamy"}, 100.0, A_MINOR),
    "Unsorted/Pine Hollow - Campfire.mp3": (None, 84.0, G_MAJOR),
}
DAMAGED = "Static Noise/Broken Record.flac"  # tags readable, audio frames garbage
DAMAGED_TAGS = {"artist": "Static Noise", "title": "Broken Record", "genre": "Noise Rock"}
GARBAGE = "Unsorted/Nobody - Nothing.mp3"  # garbage bytes: no tags, no audio
DANGLING = "Unsorted/Gone Band - Vanished.mp3"  # a symlink to a file that is gone


def click_track(bpm: float, chord: tuple[float, ...], seconds: float = SECONDS, sr: int = SR) -> np.ndarray:
    """Short noise clicks every beat over a sustained chord of pure sine tones."""
    t = np.arange(int(seconds * sr)) / sr
    y = sum(0.08 * np.sin(2 * np.pi * f * t) for f in chord)
    n = int(0.02 * sr)
    click = np.random.default_rng(0).standard_normal(n) * np.exp(-np.arange(n) / (0.003 * sr)) * 0.8
    for beat in np.arange(0.25, seconds, 60.0 / bpm):
        i = int(beat * sr)
        y[i:i + n] += click[: len(y[i:i + n])]
    return (y / max(1.0, np.abs(y).max() * 1.05)).astype(np.float32)


def _tag(path: Path, tags: dict) -> None:
    import mutagen

    audio = mutagen.File(path, easy=True)
    if audio.tags is None:
        audio.add_tags()
    for key, value in tags.items():
        audio[key] = value
    audio.save()


def _damaged_flac(path: Path) -> None:
    """A FLAC whose metadata blocks (tags included) are intact and whose frames are garbage."""
    sf.write(path, click_track(90.0, C_MAJOR, seconds=4.0), SR)
    _tag(path, DAMAGED_TAGS)
    data = path.read_bytes()
    pos = 4  # "fLaC", then metadata blocks: 1 byte flags/type, 3 bytes length
    while True:
        last, length = data[pos] & 0x80, int.from_bytes(data[pos + 1:pos + 4], "big")
        pos += 4 + length
        if last:
            break
    garbage = np.random.default_rng(3).integers(0, 256, len(data) - pos, dtype=np.uint8).tobytes()
    path.write_bytes(data[:pos] + garbage)


def write_library(library: Path) -> None:
    for rel, (tags, bpm, chord) in LIBRARY.items():
        path = library / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, click_track(bpm, chord), SR)
        if tags:
            _tag(path, tags)
    (library / DAMAGED).parent.mkdir(parents=True, exist_ok=True)
    _damaged_flac(library / DAMAGED)
    (library / GARBAGE).parent.mkdir(parents=True, exist_ok=True)
    (library / GARBAGE).write_bytes(np.random.default_rng(9).integers(0, 256, 12000, dtype=np.uint8).tobytes())
    (library / DANGLING).symlink_to(library / "Unsorted/.gone/Vanished.mp3")


# The user's export; line numbers (header = line 1) are what rejections name.
TRACKS_CSV = (
    "spotify_id,uri,artist,title,isrc\r\n"
    f"{CLICK},,Click Band,Metronome 120,\r\n"
    f",spotify:track:{AURORA},Aurora Lane,Night Drive,\r\n"
    f",https://open.spotify.com/track/{PINE}?si=abc123,Pine Hollow,Campfire,\r\n"
    f"{BROKEN},,,,\r\n"
    f"{GHOST},,Ghost Artist,Missing Song,USUM71703861\r\n"
    f"{UNKNOWN},,,,\r\n"
    "not-an-id,,Someone,\"Title, with comma\",\r\n"
    f"{CLICK},,Click Band,Metronome 120 (duplicate row),\r\n"
    f"{GONE},,Gone Band,Vanished,\r\n"
)
TRACKS_JSONL = "\n".join([
    json.dumps({"spotify_id": CLICK, "artist": "Click Band", "title": "Metronome 120"}),
    json.dumps({"uri": f"spotify:track:{AURORA}"}),
    "{not json",
    json.dumps({"uri": f"spotify:track:{PINE}", "title": "Campfire"}),
    json.dumps({"spotify_id": BROKEN}),
    json.dumps({"spotify_id": GHOST}),
]) + "\n"


def file_track_id(rel: str) -> str:
    return f"spotify-file-{hashlib.sha1(rel.encode()).hexdigest()[:16]}"


def make_fixture(root: Path) -> dict:
    root = Path(root)
    write_library(root / "library")
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "tracks.csv").write_bytes(TRACKS_CSV.encode())
    (meta / "tracks.jsonl").write_text(TRACKS_JSONL)
    return {
        # Library mode: every file described from its tags and locally computed features.
        "options": {"library": str(root / "library")},
        "expected": {
            "records": 4,
            # Neither tags nor decodable audio: nothing to say about them.
            "rejected": {GARBAGE: "nothing to describe", DANGLING: "nothing to describe"},
            # Tags readable, audio frames garbage: fails where the audio is decoded.
            "audio_fail": {file_track_id(DAMAGED): "Broken Record.flac"},
            "api": {  # with api_options(...) and tracks.csv
                "records": [CLICK, AURORA, PINE, BROKEN, GONE],
                "rejected": {GHOST: "no audio in the library for Ghost Artist – Missing Song",
                             UNKNOWN: "Spotify knows no track", "tracks.csv:8": "no Spotify track id"},
                "audio_fail": {f"spotify-{BROKEN}": "Broken Record.flac", f"spotify-{GONE}": "not found"},
            },
        },
    }


def api_options(root: Path, base: str, **extra) -> dict:
    """Options of a tracks-list run against a ``SpotifyMock`` at ``base``."""
    return {"library": str(Path(root) / "library"), "tracks": str(Path(root) / "metadata/tracks.csv"),
            "accounts_url": f"{base}/api/token", "api_url": f"{base}/v1", "requests_per_second": 1000,
            "retries": 0} | extra


class SpotifyMock:
    """The Web API endpoints the source uses (and an LLM), served on 127.0.0.1 in a thread inside
    ``with SpotifyMock() as mock`` (at ``mock.base``)."""

    def __init__(self, features_status: int = 200, llm_reply: str = "A bright description.",
                 llm_status: int = 200, llm_key: str | None = None):
        self.features_status = features_status
        self.llm_reply = llm_reply
        self.llm_status = llm_status
        self.llm_key = llm_key
        self.valid_tokens: set[str] = set()
        self.issued = 0
        self.requests: list[dict] = []
        self._serving = contextlib.ExitStack()

    def __enter__(self) -> Self:
        self.base, _ = self._serving.enter_context(serve_handler(self._handler()))
        return self

    def __exit__(self, *exc) -> None:
        self._serving.close()

    def revoke_tokens(self) -> None:
        self.valid_tokens.clear()

    def calls(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def _handler(self):
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                send_json(self, status, body)

            def _record(self, body: bytes = b"") -> dict:
                url = urlsplit(self.path)
                row = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                       "headers": dict(self.headers.items()), "body": body.decode("utf-8", "replace")}
                mock.requests.append(row)
                return row

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                row = self._record(body)
                if row["path"] == "/api/token":
                    return self._token(row)
                if row["path"] == "/llm/v1/chat/completions":
                    return self._llm(row)
                self._send(404, {"error": "not found"})

            def _token(self, row: dict) -> None:
                basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                form = parse_qs(row["body"])
                if (row["headers"].get("Authorization") != f"Basic {basic}"
                        or form.get("grant_type") != ["client_credentials"]
                        or not row["headers"].get("Content-Type", "").startswith("application/x-www-form-urlencoded")):
                    return self._send(400, {"error": "invalid_client"})
                mock.issued += 1
                token = f"{TOKEN}-{mock.issued}"
                mock.valid_tokens.add(token)
                self._send(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

            def _llm(self, row: dict) -> None:
                if mock.llm_key and row["headers"].get("Authorization") != f"Bearer {mock.llm_key}":
                    return self._send(401, {"error": {"message": "bad key"}})
                if mock.llm_status != 200:
                    return self._send(mock.llm_status, {"error": {"message": "down"}})
                self._send(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": mock.llm_reply}}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}})

            def do_GET(self) -> None:
                row = self._record()
                auth = row["headers"].get("Authorization", "")
                if not auth.startswith("Bearer ") or auth[7:] not in mock.valid_tokens:
                    return self._send(401, {"error": {"status": 401, "message": "The access token expired"}})
                ids = ",".join(row["query"].get("ids", [])).split(",")
                if row["path"] == "/v1/tracks":
                    if len(ids) > 50:
                        return self._send(400, {"error": {"status": 400, "message": "Too many ids requested"}})
                    return self._send(200, {"tracks": [CATALOG.get(i) for i in ids]})
                if row["path"] == "/v1/artists":
                    if len(ids) > 50:
                        return self._send(400, {"error": {"status": 400, "message": "Too many ids requested"}})
                    return self._send(200, {"artists": [ARTISTS.get(i) for i in ids]})
                if row["path"] == "/v1/audio-features":
                    if mock.features_status != 200:
                        return self._send(mock.features_status, {"error": {"status": mock.features_status,
                                                                           "message": "Forbidden"}})
                    if len(ids) > 100:
                        return self._send(400, {"error": {"status": 400, "message": "Too many ids requested"}})
                    return self._send(200, {"audio_features": [FEATURES.get(i) for i in ids]})
                self._send(404, {"error": {"status": 404, "message": "Service not found"}})

        return Handler
