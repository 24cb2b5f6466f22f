"""Spotify Web API metadata and audio features, described in words; audio from the user's library.

Input, one of:

(a) ``tracks``: a list the user exports (CSV, or JSON lines), one track per row with its Spotify
    id (``spotify_id``/``id``, or ``uri`` as ``spotify:track:ID`` or an open.spotify.com link)
    and optionally ``artist``, ``title``, ``isrc`` (Exportify's "Track URI", "Track Name",
    "Artist Name(s)", "ISRC" headers work too). The Web API is asked for each track's name,
    artists, album, ISRC and popularity (``/tracks``, batches of 50), the artists' genres
    (``/artists``, 50) and the audio features (``/audio-features``, 100: tempo, key, mode,
    loudness, energy, valence, danceability, ...). Each track is matched in the library by
    ISRC, else by artist/title.
(b) no ``tracks``: every file of the library, described from its own tags and features
    computed locally; the API is not called and no credentials are needed.

Credentials: a client-credentials token from ``accounts_url`` with the client id and secret
read ONLY from the environment variables named by ``client_id_env``/``client_secret_env``
(a Kubernetes Secret mounted as env); they are never options. A missing variable is a
ValueError naming it.

``/audio-features`` was deprecated on 2024-11-27: new and development-mode apps get HTTP 403
there. That is "feature unavailable", not an auth failure: it is logged once and the features
are computed from the matched file instead (``local_features``: tempo with
``librosa.beat.beat_track``, key/mode from chroma against the Krumhansl-Kessler profiles,
loudness as RMS dBFS, an energy estimate). ``null`` entries (unknown ids) get local features
too; ``key`` = -1 means the key was not detected.

Captions: sentences from ``describe`` over facets made of the artists' genres, mood words from
valence/energy, the tempo and key, plus one sentence of our own templates (several phrasings);
or, when ``llm_url`` names an OpenAI-compatible chat-completions endpoint, the model's
description first (the template captions are kept; a failed call falls back to them alone).

Records are whole tracks (phase 2). ``group`` is ``isrc:<ISRC>`` when the ISRC is known, so the
same recording from another source that knows its ISRC lands in the same group (and split), else
``spotify:<id>`` (``file:<path>``, as the folder source, for library-mode files without ISRC). Splits are hashed.
A track not in the library is rejected ("no audio in the library for <artist> – <title>").
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import os
import posixpath
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pydantic import Field, field_validator, model_validator

from musictext import storage
from musictext.ingest.base import (
    ListContext,
    Source,
    SourceOptions,
    hashed_split,
    local_copy,
    published_text,
    rejecting,
    seeded_choice,
)
from musictext.ingest.describe import Facets, describe
from musictext.ingest.http import Client
from musictext.ingest.records import PathAudio, Record, make_record, safe_id
from musictext.library import LibraryIndex, LibraryTrack
from musictext.rejects import ItemError, Rejections, json_lines

log = logging.getLogger(__name__)

LICENCE = "Spotify metadata (Spotify Developer Terms); audio: the user's own library"
TRACKS_BATCH = 50
ARTISTS_BATCH = 50
FEATURES_BATCH = 100
SPOTIFY_ID = re.compile(r"[0-9A-Za-z]{22}")
URI_ID = re.compile(r"(?:spotify:track:|open\.spotify\.com/(?:intl-[a-z]+/)?track/)([0-9A-Za-z]{22})")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NOTES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl-Kessler key profiles (major, minor), tonic first.
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
FEATURE_KEYS = ("tempo", "key", "mode", "loudness", "energy", "valence", "danceability", "acousticness",
                "instrumentalness", "speechiness", "liveness", "time_signature")


class SpotifyOptions(SourceOptions):
    # The user's music directory (local path or bucket URI): the audio of every record.
    library: str = Field(min_length=1)
    # A CSV or JSON-lines list of Spotify tracks (path or URI); unset: every file of the library.
    tracks: str | None = None
    # NAMES of the environment variables holding the credentials (never the secrets themselves).
    client_id_env: str = "SPOTIFY_CLIENT_ID"
    client_secret_env: str = "SPOTIFY_CLIENT_SECRET"
    accounts_url: str = "https://accounts.spotify.com/api/token"
    api_url: str = "https://api.spotify.com/v1"
    # Compute features from the audio file when the API has none (403, null, library mode).
    local_features: bool = True
    # Seconds of each file the local analysis reads (from 30 s in when the track is long enough).
    analysis_seconds: float = Field(default=90.0, gt=0)
    # An OpenAI-compatible endpoint (base URL, .../v1, or the full .../chat/completions URL).
    llm_url: str | None = None
    llm_model: str | None = None
    llm_key_env: str | None = None  # name of the env variable holding the LLM API key, if any

    @field_validator("client_id_env", "client_secret_env", "llm_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError("must be the NAME of an environment variable (the secret stays in the environment)")
        return value

    @model_validator(mode="after")
    def _llm(self) -> SpotifyOptions:
        if self.llm_url and not self.llm_model:
            raise ValueError("llm_url needs llm_model")
        return self


def env_secret(name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ValueError(f"environment variable {name} is not set: it must hold the {what}")
    return value


def _status(err: ItemError) -> int | None:
    return getattr(err, "status", None)


def post_json(client: Client, url: str, item: str, **kw) -> Any:
    """The JSON body of a POST (``Client.post``: rate limit, retries, Retry-After)."""
    resp = client.post(url, item, **kw)
    try:
        return resp.json()
    except ValueError:
        raise ItemError(item, f"{url} answered something that is not JSON") from None


# --- the Web API ------------------------------------------------------------------------------


class SpotifyApi:
    """The Web API endpoints this source uses, with the client-credentials flow."""

    def __init__(self, opts: SpotifyOptions):
        self.client_id = env_secret(opts.client_id_env, "Spotify client id")
        self.client_secret = env_secret(opts.client_secret_env, "Spotify client secret")
        self.accounts_url = opts.accounts_url
        self.api_url = opts.api_url.rstrip("/")
        self.client = Client.for_options(opts)
        self.token: str | None = None
        self.expires = 0.0
        self.features_available = True

    def authenticate(self) -> str:
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        try:
            body = post_json(self.client, self.accounts_url, "spotify token",
                             data={"grant_type": "client_credentials"},
                        headers={"Authorization": f"Basic {basic}"})
        except ItemError as err:  # bad credentials fail the run, not an item
            raise RuntimeError(f"Spotify token request failed ({err.reason}); check the credentials in "
                               "the environment variables") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise RuntimeError(f"Spotify token response from {self.accounts_url} has no access_token")
        self.token = token
        self.expires = time.monotonic() + float(body.get("expires_in") or 3600) - 60
        return token

    def get(self, path: str, params: dict, item: str) -> Any:
        url = f"{self.api_url}/{path}?{urlencode(params, safe=',')}"
        for attempt in range(2):
            if self.token is None or time.monotonic() >= self.expires:
                self.authenticate()
            try:
                resp = self.client.get(url, item, headers={"Authorization": f"Bearer {self.token}"})
            except ItemError as err:
                if _status(err) == 401 and attempt == 0:  # expired or revoked: a new token, once
                    self.token = None
                    continue
                raise
            return resp.json()
        raise AssertionError("unreachable")

    def _batched(self, path: str, key: str, ids: list[str], size: int) -> dict[str, dict | None]:
        out: dict[str, dict | None] = {}
        for start in range(0, len(ids), size):
            batch = ids[start:start + size]
            body = self.get(path, {"ids": ",".join(batch)}, f"{path} batch {start // size}")
            values = body.get(key) if isinstance(body, dict) else None
            if not isinstance(values, list):
                raise ItemError(f"{path} batch {start // size}", f"answer has no {key!r} list")
            for sid, value in zip(batch, values, strict=False):
                out[sid] = value if isinstance(value, dict) else None
        return out

    def tracks(self, ids: list[str]) -> dict[str, dict | None]:
        return self._batched("tracks", "tracks", ids, TRACKS_BATCH)

    def artists(self, ids: list[str]) -> dict[str, dict | None]:
        return self._batched("artists", "artists", ids, ARTISTS_BATCH)

    def audio_features(self, ids: list[str]) -> dict[str, dict | None]:
        """Features per id (None: unknown id); ids missing when the endpoint is unavailable
        (HTTP 403: deprecated for new apps, logged once) or their batch failed."""
        out: dict[str, dict | None] = {}
        for start in range(0, len(ids), FEATURES_BATCH):
            if not self.features_available:
                break
            try:
                out.update(self._batched("audio-features", "audio_features", ids[start:start + FEATURES_BATCH],
                                         FEATURES_BATCH))
            except ItemError as err:
                if _status(err) == 403:
                    self.features_available = False
                    log.warning("spotify: /audio-features answers HTTP 403 (deprecated on 2024-11-27 for new "
                                "and development-mode apps); computing features from the audio files instead")
                else:
                    log.warning("spotify: audio features unavailable (%s); computing them from the audio", err)
        return out


# --- local features ----------------------------------------------------------------------------


def local_features(path_or_uri: str, seconds: float = 90.0, offset: float = 0.0) -> dict:
    """Tempo (BPM), key (0-11, -1 undetected), mode (1 major, 0 minor), loudness (RMS dBFS),
    energy (0-1: loudness and onset density) and the analysed duration, from the audio itself.

    Raises whatever the decoder raises for a file it cannot read.
    """
    import warnings

    import librosa
    import numpy as np

    sr = 22050
    with local_copy(path_or_uri) as path, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's "PySoundFile failed; trying audioread" noise
        y, _ = librosa.load(path, sr=sr, mono=True, offset=offset, duration=seconds)
    if y.size < sr:
        raise ValueError(f"{path_or_uri}: less than 1 s of audio decoded")
    rms = float(np.sqrt(np.mean(np.square(y))))
    loudness = 20 * np.log10(max(rms, 1e-10))
    hop = 256  # finer than the default 512: tempo steps of ~1 BPM near 120
    onset_env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop)
    tempo, beats = librosa.beat.beat_track(onset_envelope=onset_env, sr=sr, hop_length=hop)
    tempo = float(np.atleast_1d(tempo)[0])
    if len(beats) >= 4:  # the median beat interval refines the tempo estimate
        interval = float(np.median(np.diff(librosa.frames_to_time(beats, sr=sr, hop_length=hop))))
        if interval > 0:
            tempo = 60.0 / interval
    # Constant-Q chroma: exact semitone bins down to C1 (the STFT's smear low notes into neighbours).
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=4096).mean(axis=1)
    key, mode, confidence = estimate_key(chroma)
    onsets = librosa.onset.onset_detect(onset_envelope=onset_env, sr=sr, hop_length=hop)
    density = len(onsets) / (y.size / sr)
    energy = 0.7 * float(np.clip((loudness + 35.0) / 30.0, 0, 1)) + 0.3 * float(np.clip(density / 6.0, 0, 1))
    return {"tempo": round(tempo, 1) if tempo > 0 else None, "key": key, "mode": mode,
            "loudness": round(float(loudness), 1), "energy": round(energy, 3),
            "key_confidence": round(confidence, 3), "analysed_s": round(y.size / sr, 2)}


def estimate_key(chroma) -> tuple[int, int, float]:
    """(pitch class, mode, correlation) of the best Krumhansl-Kessler profile; (-1, -1, r)
    when the chroma is flat or no profile correlates clearly."""
    import numpy as np

    chroma = np.asarray(chroma, dtype=float)
    if chroma.std() < 1e-6:
        return -1, -1, 0.0
    best = (-1, -1, -1.0)
    for mode, profile in ((1, KK_MAJOR), (0, KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if r > best[2]:
                best = (tonic, mode, r)
    return best if best[2] >= 0.3 else (-1, -1, best[2])


# --- the track list ----------------------------------------------------------------------------


@dataclass
class Wanted:
    """One track to describe: from the user's list (a Spotify id) or a library file."""

    item: str  # the name rejections use
    spotify_id: str = ""
    artist: str = ""
    title: str = ""
    isrc: str = ""
    file: LibraryTrack | None = None  # library mode: the file itself
    info: dict = field(default_factory=dict)  # what the API says


COLUMN_ALIASES = {
    "spotify_id": ("spotify_id", "spotify id", "id", "track_id", "track id"),
    "uri": ("uri", "spotify_uri", "track uri", "track_uri", "url", "link"),
    "artist": ("artist", "artists", "artist name(s)", "artist name", "artist_name"),
    "title": ("title", "name", "track name", "track_name", "track"),
    "isrc": ("isrc",),
}


def spotify_id_of(value: str) -> str:
    value = (value or "").strip()
    if SPOTIFY_ID.fullmatch(value):
        return value
    m = URI_ID.search(value)
    return m.group(1) if m else ""


def _field(row: dict, name: str) -> str:
    lowered = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    for alias in COLUMN_ALIASES[name]:
        value = lowered.get(alias)
        if value not in (None, ""):
            return str(value).strip()
    return ""


def read_track_list(uri: str, rejections: Rejections) -> list[Wanted]:
    """The user's list (CSV with a header, or JSON lines); bad rows rejected as ``file:line``."""
    text = published_text(storage.read_bytes(uri), posixpath.basename(uri), rejections)
    name = posixpath.basename(uri)
    rows: list[tuple[str, dict]] = []
    if uri.lower().endswith((".jsonl", ".ndjson", ".json")) or text.lstrip().startswith("{"):
        rows = list(json_lines(text, name, rejections))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            rows.append((f"{name}:{reader.line_num}", row))
    out: list[Wanted] = []
    seen: set[str] = set()
    for item, row in rows:
        sid = spotify_id_of(_field(row, "spotify_id")) or spotify_id_of(_field(row, "uri"))
        if not sid:
            rejections.add(item, "no Spotify track id (spotify_id, or uri spotify:track:<22 characters>)")
            continue
        if sid in seen:
            continue
        seen.add(sid)
        out.append(Wanted(item=sid, spotify_id=sid, artist=_field(row, "artist"), title=_field(row, "title"),
                          isrc=_field(row, "isrc").upper()))
    return out


# --- words from features -----------------------------------------------------------------------


def key_name(features: dict) -> str:
    key, mode = features.get("key"), features.get("mode")
    if not isinstance(key, int) or not 0 <= key <= 11 or mode not in (0, 1):
        return ""
    return f"{NOTES[key]} {'major' if mode == 1 else 'minor'}"


def tempo_word(bpm: float) -> str:
    if bpm < 80:
        return "slow"
    if bpm < 115:
        return "moderate"
    if bpm < 145:
        return "fast"
    return "very fast"


def feature_words(features: dict) -> tuple[list[str], list[str]]:
    """(moods, other) words for the features Spotify (or the local analysis) gives."""
    moods: list[str] = []
    other: list[str] = []
    energy, valence = features.get("energy"), features.get("valence")
    if isinstance(energy, (int, float)):
        if energy >= 0.75:
            moods.append("energetic")
        elif energy <= 0.35:
            moods.append("calm")
    if isinstance(valence, (int, float)):
        if valence >= 0.7:
            moods.append("happy")
        elif valence <= 0.3:
            moods.append("dark" if isinstance(energy, (int, float)) and energy >= 0.75 else "sad")
    thresholds = (("danceability", 0.7, "danceable"), ("acousticness", 0.7, "acoustic"),
                  ("instrumentalness", 0.6, "instrumental"), ("liveness", 0.8, "live recording"),
                  ("speechiness", 0.66, "spoken word"))
    for key, edge, word in thresholds:
        value = features.get(key)
        if isinstance(value, (int, float)) and value >= edge:
            other.append(word)
    return moods, other


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def feature_sentence(key: str, features: dict, genres: list[str], moods: list[str]) -> str:
    """One sentence on tempo and key in one of several phrasings ("" without either)."""
    bpm = features.get("tempo")
    bpm = round(bpm) if isinstance(bpm, (int, float)) and bpm > 0 else None
    tonality = key_name(features)
    noun = seeded_choice(key + ":noun", ("song", "track", "piece", "tune"))
    head = " ".join(x for x in (", ".join(moods[:2]), genres[0] if genres else "", noun) if x)
    if bpm and tonality:
        options = (f"{_article(head)} at {bpm} BPM in {tonality}.",
                   f"{head} in the key of {tonality}, around {bpm} beats per minute.",
                   f"{bpm} BPM, {tonality}: {_article(head)}.")
    elif bpm:
        options = (f"{_article(head)} at {bpm} BPM.", f"{head} moving at about {bpm} beats per minute.",
                   f"{_article(head)} with a tempo of {bpm} BPM.")
    elif tonality:
        options = (f"{_article(head)} in {tonality}.", f"{head} in the key of {tonality}.")
    else:
        return ""
    text = seeded_choice(key + ":features", options)
    return text[0].upper() + text[1:]


def llm_prompt(w: Wanted, genres: list[str], features: dict, tags: list[str]) -> str:
    lines = [f"Title: {w.info.get('name') or w.title}", f"Artist: {w.info.get('artist') or w.artist}"]
    if w.info.get("album"):
        lines.append(f"Album: {w.info['album']}")
    if genres:
        lines.append(f"Genres: {', '.join(genres)}")
    if tags:
        lines.append(f"Tags: {', '.join(tags)}")
    if features.get("tempo"):
        lines.append(f"Tempo: {round(features['tempo'])} BPM")
    if key_name(features):
        lines.append(f"Key: {key_name(features)}")
    for name in ("energy", "valence", "danceability", "acousticness", "instrumentalness", "speechiness",
                 "liveness"):
        if isinstance(features.get(name), (int, float)):
            lines.append(f"{name.capitalize()} (0-1): {features[name]:.2f}")
    if isinstance(features.get("loudness"), (int, float)):
        lines.append(f"Loudness: {features['loudness']:.1f} dB")
    return ("Describe how this music sounds in one or two sentences (at most 60 words) for a music "
            "search engine: genre, mood, instruments, tempo and energy. Do not name the artist or the "
            "title.\n\n" + "\n".join(lines))


class LlmDescriber:
    """One description per track from an OpenAI-compatible chat-completions endpoint."""

    def __init__(self, opts: SpotifyOptions):
        url = opts.llm_url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url += "/chat/completions" if url.endswith("/v1") else "/v1/chat/completions"
        self.url = url
        self.model = opts.llm_model
        self.headers = {}
        if opts.llm_key_env:
            self.headers["Authorization"] = f"Bearer {env_secret(opts.llm_key_env, 'LLM API key')}"
        self.client = Client.for_options(opts)

    def describe(self, item: str, prompt: str) -> str:
        body = {"model": self.model, "temperature": 0.7, "max_tokens": 160,
                "messages": [{"role": "system", "content": "You write short, factual descriptions of music."},
                             {"role": "user", "content": prompt}]}
        answer = post_json(self.client, self.url, item, json=body, headers=self.headers)
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ItemError(item, "the LLM answer has no choices[0].message.content") from None
        text = " ".join(str(text or "").split()).strip().strip('"').strip()
        if not text:
            raise ItemError(item, "the LLM answered an empty description")
        return text[:1000]


# --- the source --------------------------------------------------------------------------------


class SpotifySource(Source):
    name = "spotify"
    description = ("Spotify track metadata and audio features (or features computed from the audio) "
                   "described by templates or an LLM; audio from the user's own library (full songs)")
    phase = 2
    Options = SpotifyOptions
    licence = LICENCE
    published = ()  # nothing is published: the user's track list and the Web API

    def records(self, opts: SpotifyOptions, ctx: ListContext) -> Iterator[Record]:
        yield from self.parse(opts.metadata or "", opts, ctx.rejections)

    def parse(self, meta_dir: str, opts: SpotifyOptions, rejections: Rejections) -> Iterator[Record]:
        llm = LlmDescriber(opts) if opts.llm_url else None  # a missing key variable fails here
        api_features: dict[str, dict | None] = {}
        genres_of: dict[str, list[str]] = {}
        if opts.tracks:
            listed = read_track_list(opts.tracks, rejections)
            if not listed:
                log.warning("spotify: no usable track in %s", opts.tracks)
                return
            api = SpotifyApi(opts)  # missing credentials fail before any request
            library = LibraryIndex(opts.library)
            wanted = self._from_api(api, listed, library, rejections)
            api_features = api.audio_features([w.spotify_id for w in wanted])
            genres_of = self._genres(api, wanted)
        else:
            library = LibraryIndex(opts.library)
            wanted = [Wanted(item=t.path, artist=t.artist, title=t.title, isrc=t.isrc, file=t)
                      for t in library.tracks]
        for w in wanted:
            with rejecting(rejections):
                yield self.make(w, opts, api_features.get(w.spotify_id), genres_of, llm)

    def _from_api(self, api: SpotifyApi, wanted: list[Wanted], library: LibraryIndex,
                  rejections: Rejections) -> list[Wanted]:
        """Wanted tracks with the API's metadata and their library file; the rest rejected."""
        infos: dict[str, dict | None] = {}
        ids = [w.spotify_id for w in wanted]
        for start in range(0, len(ids), TRACKS_BATCH):
            batch = ids[start:start + TRACKS_BATCH]
            try:
                infos.update(api.tracks(batch))
            except ItemError as err:
                for sid in batch:
                    rejections.add(sid, f"Spotify track lookup failed: {err.reason}")
        out = []
        unmatched = 0
        for w in wanted:
            if w.spotify_id not in infos:
                continue  # its batch failed (rejected above)
            info = infos[w.spotify_id]
            if info is None and not w.title:
                rejections.add(w.item, f"Spotify knows no track {w.spotify_id}")
                continue
            if info is not None:
                artists = [a for a in info.get("artists") or [] if isinstance(a, dict)]
                w.info = {"name": info.get("name") or w.title,
                          "artists": [a.get("name", "") for a in artists],
                          "artist_ids": [a["id"] for a in artists if a.get("id")],
                          "album": (info.get("album") or {}).get("name", ""),
                          "release_date": (info.get("album") or {}).get("release_date", ""),
                          "popularity": info.get("popularity"),
                          "duration_ms": info.get("duration_ms")}
                w.info["artist"] = ", ".join(a for a in w.info["artists"] if a)
                w.isrc = ((info.get("external_ids") or {}).get("isrc") or w.isrc or "").upper()
            else:
                log.info("spotify: %s unknown to the API; using the list's %s – %s", w.spotify_id, w.artist, w.title)
            first_artist = (w.info.get("artists") or [w.artist])[0] if w.info else w.artist
            title = w.info.get("name") or w.title
            found = library.match(first_artist, title, w.isrc)
            if found is None and w.title and (w.artist, w.title) != (first_artist, title):
                found = library.match(w.artist, w.title)
            if found is None:
                unmatched += 1
                rejections.add(w.item, f"no audio in the library for {w.info.get('artist') or w.artist} – {title}")
                continue
            w.file = found
            out.append(w)
        log.info("spotify: %d of %d listed tracks found in the library %s (%d unmatched)",
                 len(out), len(out) + unmatched, library.root, unmatched)
        return out

    def _genres(self, api: SpotifyApi, wanted: list[Wanted]) -> dict[str, list[str]]:
        ids = list(dict.fromkeys(a for w in wanted for a in w.info.get("artist_ids", [])))
        if not ids:
            return {}
        try:
            artists = api.artists(ids)
        except ItemError as err:
            log.warning("spotify: artist genres unavailable (%s)", err)
            return {}
        return {aid: [str(g) for g in (a or {}).get("genres") or []] for aid, a in artists.items()}

    def make(self, w: Wanted, opts: SpotifyOptions, api_features: dict | None, genres_of: dict,
             llm: LlmDescriber | None) -> Record:
        track = w.file
        assert track is not None
        features: dict = {}
        source = None
        if api_features:
            features = {k: api_features[k] for k in FEATURE_KEYS if api_features.get(k) is not None}
            source = "spotify"
        elif opts.local_features:
            uri = storage.join(opts.library, track.path)
            long = (track.duration_s or 0) > opts.analysis_seconds + 60
            try:
                features = local_features(uri, opts.analysis_seconds, 30.0 if long else 0.0)
                source = "local"
            except Exception as err:  # noqa: BLE001 - a file librosa cannot decode may still decode in the clip stage
                log.warning("spotify: no local features for %s: %s: %s", uri, type(err).__name__, err)
        genres = list(dict.fromkeys(g.lower() for aid in w.info.get("artist_ids", [])
                                    for g in genres_of.get(aid, [])))
        genres += [g.lower() for g in track.genres if g.lower() not in genres]
        feature_moods, other = feature_words(features)
        moods = list(dict.fromkeys([m.lower() for m in track.moods] + feature_moods))  # the user's tags first
        tonality = key_name(features)
        bpm = features.get("tempo")
        has_bpm = isinstance(bpm, (int, float)) and bpm > 0
        facets = Facets(genre=genres[:4], mood=moods[:3],
                        tempo=[f"{tempo_word(bpm)}, {round(bpm)} BPM"] if has_bpm else [],
                        other=other + ([f"in {tonality}"] if tonality else []))
        if facets.empty():
            raise ItemError(w.item, "nothing to describe: no genres, tags or audio features")
        key = w.spotify_id or track.path
        captions = describe(facets, key, n=2)
        sentence = feature_sentence(key, features, genres, moods)
        if sentence:
            captions.append(sentence)
        tempo_tag = {"moderate": "mid-tempo"}.get(tempo_word(bpm), tempo_word(bpm)) if has_bpm else ""
        tags = genres + moods + ([tempo_tag] if tempo_tag else []) + other
        if llm is not None:
            try:
                captions.insert(0, llm.describe(w.item, llm_prompt(w, genres, features, tags)))
            except ItemError as err:
                log.warning("spotify: LLM description failed for %s (%s); template captions only",
                            w.item, err.reason)
        title = w.info.get("name") or w.title or track.title
        artist = w.info.get("artist") or w.artist or track.artist
        isrc = w.isrc or track.isrc
        if w.spotify_id:
            track_id = f"{self.name}-{w.spotify_id}"
            group = f"isrc:{isrc}" if isrc else f"spotify:{w.spotify_id}"
        else:
            track_id = f"{self.name}-file-{hashlib.sha1(track.path.encode()).hexdigest()[:16]}"
            group = f"isrc:{isrc}" if isrc else f"file:{track.path}"  # as the folder source
        duration = (w.info.get("duration_ms") or 0) / 1000 or track.duration_s
        meta: dict[str, Any] = {"artist": artist, "title": title, "library_path": track.path}
        for name, value in (("spotify_id", w.spotify_id), ("album", w.info.get("album") or track.album),
                            ("isrc", isrc), ("popularity", w.info.get("popularity")),
                            ("duration_s", duration), ("genres", genres)):
            if value not in (None, "", []):
                meta[name] = value
        meta["features"] = features
        meta["features_source"] = source
        meta["key"] = tonality or None
        meta["bpm"] = round(bpm, 1) if has_bpm else None
        return make_record(
            w.item,
            track_id=safe_id(track_id),
            source=self.name,
            split=hashed_split(group, opts.split_seed),
            captions=list(dict.fromkeys(captions)),
            tags=tags,
            licence=LICENCE,
            audio=PathAudio(root=opts.library, path=track.path),
            group=group,
            whole_track=True,
            meta=meta,
        )

