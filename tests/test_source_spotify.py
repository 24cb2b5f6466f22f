"""The spotify source against a local stand-in of the Web API (and of an LLM endpoint)."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
import soundfile as sf
from musictext.ingest.base import hashed_split
from musictext.library import LibraryIndex
from musictext.ingest.sources.spotify import (
    LICENCE,
    SpotifyApi,
    SpotifySource,
    estimate_key,
    local_features,
    read_track_list,
)
from musictext.rejects import Rejections

from tests.datasets import build, check_expected, parse_source
from tests.datasets import spotify as fx


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return build(tmp_path_factory, fx.make_fixture)


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", fx.CLIENT_ID)
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", fx.CLIENT_SECRET)


def parse(options: dict):
    return parse_source(SpotifySource, "", **options)


def test_fixture_files(made):
    root, _ = made
    csv_bytes = (root / "metadata/tracks.csv").read_bytes()
    assert csv_bytes.startswith(b"spotify_id,uri,artist,title,isrc\r\n")
    tracks = {t.path: t for t in LibraryIndex(str(root / "library")).tracks}
    assert tracks["Click Band/Clicks/01 Metronome 120.flac"].isrc == "USRC17607839"
    assert tracks["Unsorted/Pine Hollow - Campfire.mp3"].artist == "Pine Hollow"  # from the name
    assert tracks[fx.DAMAGED].genres == ["Noise Rock"]  # tags intact ...
    with pytest.raises(sf.LibsndfileError):  # ... audio frames not
        sf.read(root / "library" / fx.DAMAGED)


def test_api_tracks_with_audio_features(made, creds):
    root, info = made
    with fx.SpotifyMock() as mock:
        records, rejected = parse(fx.api_options(root, mock.base))
    expected = info["expected"]["api"]
    assert list(records) == [f"spotify-{sid}" for sid in expected["records"]]
    assert rejected == {
        fx.GHOST: "no audio in the library for Ghost Artist – Missing Song",
        fx.UNKNOWN: f"Spotify knows no track {fx.UNKNOWN}",
        "tracks.csv:8": "no Spotify track id (spotify_id, or uri spotify:track:<22 characters>)",
    }
    assert set(expected["audio_fail"]) <= set(records)

    click = records[f"spotify-{fx.CLICK}"]
    # Matched by ISRC: Spotify's title ("... - 2011 Remaster") is not the file's.
    assert click.audio.kind == "path" and click.audio.path == "Click Band/Clicks/01 Metronome 120.flac"
    assert click.audio.root == str(root / "library")
    assert click.group == "isrc:USRC17607839"
    assert click.split == hashed_split("isrc:USRC17607839", 0)
    assert click.licence == LICENCE and click.whole_track and click.start_s is None and click.end_s is None
    assert click.tags == ["minimal techno", "electronica", "energetic", "happy", "fast", "danceable", "instrumental"]
    assert ("Minimal techno and electronica music. The mood is energetic and happy. The tempo is fast, 120 BPM. "
            "It is danceable, instrumental and in C major.") in click.captions
    assert "Energetic, happy minimal techno tune in the key of C major, around 120 beats per minute." in click.captions
    assert click.meta["features_source"] == "spotify" and click.meta["features"]["tempo"] == 120.02
    assert click.meta["title"] == "Metronome 120 - 2011 Remaster" and click.meta["popularity"] == 41
    assert click.meta["key"] == "C major" and click.meta["duration_s"] == 8.0

    aurora = records[f"spotify-{fx.AURORA}"]
    assert aurora.meta["key"] is None and aurora.meta["features"]["key"] == -1  # -1: undetected
    assert not any("major" in c or "minor" in c for c in aurora.captions)
    assert aurora.meta["artist"] == "Aurora Lane, Guest Star"
    assert aurora.meta["genres"] == ["synthwave", "retrowave", "dance pop"]  # both artists and the file
    assert aurora.audio.path == "Aurora Lane/Neon/02 Night Drive.mp3"  # "(feat. Guest Star)" in the tag

    pine = records[f"spotify-{fx.PINE}"]  # audio features null -> computed from the file
    assert pine.meta["features_source"] == "local"
    assert pine.meta["bpm"] == pytest.approx(84, abs=4)
    assert pine.meta["key"] == "G major"
    assert pine.group == f"spotify:{fx.PINE}"  # no ISRC
    assert pine.audio.path == "Unsorted/Pine Hollow - Campfire.mp3"

    broken = records[f"spotify-{fx.BROKEN}"]  # listed: its audio fails later, at download
    assert broken.audio.path == fx.DAMAGED and broken.meta["features_source"] == "spotify"
    assert any("150 BPM" in c for c in broken.captions) and any("F minor" in c for c in broken.captions)

    token = mock.calls("/api/token")
    assert len(token) == 1
    basic = base64.b64encode(f"{fx.CLIENT_ID}:{fx.CLIENT_SECRET}".encode()).decode()
    assert token[0]["headers"]["Authorization"] == f"Basic {basic}"
    assert token[0]["body"] == "grant_type=client_credentials"
    assert token[0]["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    gets = [r for r in mock.requests if r["method"] == "GET"]
    assert gets and all(r["headers"]["Authorization"] == f"Bearer {fx.TOKEN}-1" for r in gets)
    (tracks_call,) = mock.calls("/v1/tracks")  # duplicate row dropped, bad row never asked
    assert tracks_call["query"]["ids"] == [",".join([fx.CLICK, fx.AURORA, fx.PINE, fx.BROKEN, fx.GHOST, fx.UNKNOWN,
                                                      fx.GONE])]
    (features_call,) = mock.calls("/v1/audio-features")  # only tracks that have audio
    assert features_call["query"]["ids"] == [",".join([fx.CLICK, fx.AURORA, fx.PINE, fx.BROKEN, fx.GONE])]
    (artists_call,) = mock.calls("/v1/artists")
    assert artists_call["query"]["ids"][0].split(",") == [
        "0ClickBandArtistId0000", "0AuroraLaneArtistId000", "0GuestStarArtistId0000", "0PineHollowArtistId000",
        "0StaticNoiseArtistId00", "0GoneBandArtistId00000"]


def test_audio_features_403_falls_back_to_local_features(made, creds, caplog):
    root, _ = made
    with caplog.at_level(logging.WARNING), fx.SpotifyMock(features_status=403) as mock:
        records, rejected = parse(fx.api_options(root, mock.base))
    assert len(records) == 5 and fx.GHOST in rejected
    click = records[f"spotify-{fx.CLICK}"]
    assert click.meta["features_source"] == "local"
    assert click.meta["bpm"] == pytest.approx(120, abs=4)  # a click every 0.5 s
    assert click.meta["key"] == "C major"  # a C-E-G chord of sine tones
    assert -40 < click.meta["features"]["loudness"] < 0
    assert any("C major" in c for c in click.captions) and "danceable" not in click.tags  # no Spotify features
    aurora = records[f"spotify-{fx.AURORA}"]
    assert aurora.meta["key"] == "A minor" and aurora.meta["bpm"] == pytest.approx(100, abs=4)
    broken = records[f"spotify-{fx.BROKEN}"]  # undecodable here too: described from its genres only
    assert broken.meta["features_source"] is None and broken.meta["features"] == {}
    assert broken.tags == ["noise rock"]
    assert records[f"spotify-{fx.GONE}"].audio.path == fx.DANGLING  # listed; its fetch finds no file
    assert len(mock.calls("/v1/audio-features")) == 1 and len(mock.calls("/api/token")) == 1  # not an auth failure
    warned = [r for r in caplog.records if "audio-features answers HTTP 403" in r.getMessage()]
    assert len(warned) == 1


def test_library_mode_needs_no_api(made, monkeypatch):
    _, info = made
    monkeypatch.delenv("SPOTIFY_CLIENT_ID", raising=False)
    options = info["options"] | {"api_url": "http://127.0.0.1:9/v1", "accounts_url": "http://127.0.0.1:9/token"}
    records, rejected = parse(options)
    check_expected((records, rejected), info["expected"])  # records, rejections, audio_fail listed
    click = records[fx.file_track_id("Click Band/Clicks/01 Metronome 120.flac")]
    assert click.group == "isrc:USRC17607839" and click.meta["key"] == "C major"
    assert click.meta["features_source"] == "local" and "spotify_id" not in click.meta
    aurora = records[fx.file_track_id("Aurora Lane/Neon/02 Night Drive.mp3")]
    assert aurora.tags[:2] == ["synthwave", "dreamy"]  # the file's genre and mood tags
    pine = records[fx.file_track_id("Unsorted/Pine Hollow - Campfire.mp3")]
    assert pine.group == "file:Unsorted/Pine Hollow - Campfire.mp3"
    assert pine.split == hashed_split(pine.group, 0)
    damaged = records[fx.file_track_id(fx.DAMAGED)]
    assert damaged.tags == ["noise rock"] and damaged.captions


def test_llm_descriptions(made, creds, monkeypatch):
    root, _ = made
    reply = "Warm analog synths over a steady drum machine pulse."
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-key")
    with fx.SpotifyMock(llm_reply=reply, llm_key="sk-test-key") as mock:
        records, _ = parse(fx.api_options(root, mock.base, llm_url=f"{mock.base}/llm", llm_model="tiny-llm",
                                          llm_key_env="TEST_LLM_KEY", local_features=False))
    assert len(records) == 5
    for r in records.values():
        assert r.captions[0] == reply and len(r.captions) >= 3  # the template captions stay
    calls = mock.calls("/llm/v1/chat/completions")
    assert len(calls) == 5
    bodies = [json.loads(c["body"]) for c in calls]
    assert all(b["model"] == "tiny-llm" for b in bodies)
    assert all(c["headers"]["Authorization"] == "Bearer sk-test-key" for c in calls)
    prompt = bodies[0]["messages"][-1]["content"]
    assert "Metronome 120 - 2011 Remaster" in prompt and "Tempo: 120 BPM" in prompt and "Key: C major" in prompt


def test_llm_failure_falls_back_to_templates(made, creds, caplog):
    root, _ = made
    with caplog.at_level(logging.WARNING), fx.SpotifyMock(llm_status=500) as mock:
        records, _ = parse(fx.api_options(root, mock.base, llm_url=f"{mock.base}/llm/v1", llm_model="m",
                                          local_features=False))
    assert len(records) == 5
    click = records[f"spotify-{fx.CLICK}"]
    assert "A bright description." not in click.captions and len(click.captions) == 3
    assert any("LLM description failed" in r.getMessage() for r in caplog.records)


def test_credentials_come_only_from_the_environment(made, monkeypatch):
    root, _ = made
    monkeypatch.delenv("SPOTIFY_CLIENT_ID", raising=False)
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", fx.CLIENT_SECRET)
    with fx.SpotifyMock() as mock:
        with pytest.raises(ValueError, match="SPOTIFY_CLIENT_ID"):
            parse(fx.api_options(root, mock.base))
        monkeypatch.setenv("MY_ID", fx.CLIENT_ID)
        with pytest.raises(ValueError, match="MY_SECRET"):
            parse(fx.api_options(root, mock.base, client_id_env="MY_ID", client_secret_env="MY_SECRET"))
        with pytest.raises(ValueError, match="NO_SUCH_LLM_KEY"):
            parse(fx.api_options(root, mock.base, llm_url=mock.base, llm_model="m", llm_key_env="NO_SUCH_LLM_KEY"))
        assert mock.requests == []  # nothing was sent
    source = SpotifySource()
    with pytest.raises(ValueError, match="client_secret"):
        source.options({"library": "x", "client_secret": "abc123"})  # secrets are never options
    with pytest.raises(ValueError, match="client_id_env"):
        source.options({"library": "x", "client_id_env": "abc 123 secret!"})
    with pytest.raises(ValueError, match="llm_model"):
        source.options({"library": "x", "llm_url": "http://h"})


def test_wrong_credentials_fail_the_run(made, monkeypatch):
    root, _ = made
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", fx.CLIENT_ID)
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", "wrong")
    with fx.SpotifyMock() as mock, pytest.raises(RuntimeError, match="token request failed"):
        parse(fx.api_options(root, mock.base))


def test_batches_and_token_refresh(made, creds):
    root, _ = made
    source = SpotifySource()
    with fx.SpotifyMock() as mock:
        api = SpotifyApi(source.options(fx.api_options(root, mock.base)))
        ids = [f"{i:022d}" for i in range(120)]
        assert set(api.tracks(ids).values()) == {None}
        assert set(api.audio_features(ids).values()) == {None}
        api.artists(ids[:60])
        sizes = {path: [len(c["query"]["ids"][0].split(",")) for c in mock.calls(path)]
                 for path in ("/v1/tracks", "/v1/audio-features", "/v1/artists")}
        assert sizes == {"/v1/tracks": [50, 50, 20], "/v1/audio-features": [100, 20], "/v1/artists": [50, 10]}
        mock.revoke_tokens()  # the token expires: one 401, a new token, the call succeeds
        assert api.tracks([fx.CLICK])[fx.CLICK]["name"] == "Metronome 120 - 2011 Remaster"
        assert mock.issued == 2


def test_jsonl_track_list(made, creds):
    root, _ = made
    with fx.SpotifyMock() as mock:
        records, rejected = parse(fx.api_options(root, mock.base, tracks=str(root / "metadata/tracks.jsonl"),
                                                 local_features=False))
    assert list(records) == [f"spotify-{s}" for s in (fx.CLICK, fx.AURORA, fx.PINE, fx.BROKEN)]  # no GONE row
    assert rejected["tracks.jsonl:3"].startswith("not valid JSON")
    assert rejected[fx.GHOST].startswith("no audio in the library")


def test_track_list_columns(tmp_path):
    export = tmp_path / "exportify.csv"
    export.write_text('"Track URI","Track Name","Artist Name(s)","Album Name","ISRC"\n'
                      f'"spotify:track:{fx.CLICK}","Metronome 120","Click Band","Clicks","usrc17607839"\n'
                      '"spotify:episode:0000000000000000000000","A podcast","Someone","",""\n')
    rejections = Rejections("list")
    wanted = read_track_list(str(export), rejections)
    assert [(w.spotify_id, w.artist, w.title, w.isrc) for w in wanted] == [
        (fx.CLICK, "Click Band", "Metronome 120", "USRC17607839")]
    assert [r["item"] for r in rejections.rows] == ["exportify.csv:3"]


def test_local_features_of_a_click_track(tmp_path):
    path = tmp_path / "click.wav"
    sf.write(path, fx.click_track(120.0, fx.C_MAJOR), fx.SR)
    feats = local_features(str(path))
    assert feats["tempo"] == pytest.approx(120, abs=4)
    assert (feats["key"], feats["mode"]) == (0, 1)
    assert 0 <= feats["energy"] <= 1 and feats["analysed_s"] == pytest.approx(8.0, abs=0.1)
    assert estimate_key([1.0] * 12)[:2] == (-1, -1)  # flat chroma: no key
    assert Path(fx.__file__).name == "spotify.py"
