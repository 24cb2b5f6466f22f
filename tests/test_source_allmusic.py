"""The ``allmusic`` source: permission gate, robots.txt, rate limits, page parsing, exports,
and matching reviews to the user's library (a local HTTP server plays AllMusic)."""

from __future__ import annotations

import itertools

import pytest

from musictext.ingest.base import ListContext, hashed_split
from musictext.ingest.records import PathAudio
from musictext.ingest.sources.allmusic import (
    LICENCE,
    AllMusicSource,
    parse_page,
    parse_url,
    review_captions,
    sentences,
)
from musictext.rejects import Rejections
from tests.datasets import allmusic as am
from tests.datasets import check_expected, fixture_options, parse_source

ALBUM_SPLIT = hashed_split("allmusic:mw0000123456", 0)


def _options(fx: dict, base: str, **extra) -> dict:
    return fixture_options(fx, base) | extra


def _run(options: dict, meta_dir: str = ""):
    return parse_source(AllMusicSource, meta_dir, **options)


@pytest.fixture(scope="module")
def url_run(tmp_path_factory):
    """One URL-list run against the local server (Crawl-delay 1 s: ~5 s), shared by the tests."""
    root = tmp_path_factory.mktemp("allmusic")
    fx = am.make_fixture(root)
    with am.serve(root) as (base, log):
        records, rejected = _run(_options(fx, base))
    return root, fx, records, rejected, list(log)


# -- permission -------------------------------------------------------------------------------

def test_refused_without_permission(tmp_path):
    root = tmp_path
    fx = am.make_fixture(root)
    with am.serve(root) as (base, log):
        src = AllMusicSource()
        options = _options(fx, base)
        del options["permission"]
        opts = src.options(options)
        with pytest.raises(ValueError, match="permission=true") as err:
            src.records(opts, ListContext())  # raises on the call, before iterating
        assert "terms of use" in str(err.value) and "Nothing was fetched" in str(err.value)
        with pytest.raises(ValueError, match="permission=true"):
            src.parse("", opts, Rejections("list"))
        with pytest.raises(ValueError, match="permission=true"):
            src.records(src.options(options | {"permission": False}), ListContext())
    assert log == []  # not even robots.txt


def test_options_need_one_input_and_a_library():
    src = AllMusicSource()
    with pytest.raises(ValueError, match="exactly one of urls"):
        src.options({"permission": True, "library": "/music"})
    with pytest.raises(ValueError, match="exactly one of urls"):
        src.options({"permission": True, "library": "/music", "urls": "u.txt", "export": "e.csv"})
    with pytest.raises(ValueError, match="library"):
        src.options({"permission": True, "urls": "u.txt"})


# -- ids --------------------------------------------------------------------------------------

def test_parse_url_ids():
    assert parse_url("https://www.allmusic.com/album/kind-of-blue-mw0000191710") == ("album", "mw0000191710")
    assert parse_url("http://allmusic.com/song/so-what-mt0012345678/") == ("song", "mt0012345678")
    assert parse_url("https://www.allmusic.com/artist/miles-davis-mn0000423829") == ("artist", "mn0000423829")
    assert parse_url("https://www.allmusic.com/album/mw0000191710") == ("album", "mw0000191710")
    for bad, reason in [
        ("https://www.allmusic.com/album/kind-of-blue-mw000019171", "no valid AllMusic id"),  # 9 digits
        ("https://www.allmusic.com/album/kind-of-blue-mw00001917100", "no valid AllMusic id"),  # 11 digits
        ("https://www.allmusic.com/album/kind-of-blue-mx0000191710", "no valid AllMusic id"),
        ("https://www.allmusic.com/album/", "no valid AllMusic id"),
        ("https://www.allmusic.com/album/kind-of-blue-mt0000191710", "song id in a /album/ URL"),
        ("https://www.allmusic.co/album/kind-of-blue-mw0000191710", "not an AllMusic URL"),
        ("www.allmusic.com/album/kind-of-blue-mw0000191710", "not an AllMusic URL"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_url(bad)


# -- page parsing -----------------------------------------------------------------------------

def test_parse_album_page():
    html = am.review_page("album", am.ALBUM, "Night Sessions", "Miles Quartet", ["Jazz"], ["Hard Bop", "Modal Music"],
                          ["Nocturnal", "Relaxed", "Sophisticated"], am.ALBUM_REVIEW)
    review = parse_page(html)
    assert review.title == "Night Sessions"
    assert review.artist == "Miles Quartet"
    assert review.genres == ["Jazz"]
    assert review.styles == ["Hard Bop", "Modal Music"]
    assert review.moods == ["Nocturnal", "Relaxed", "Sophisticated"]
    # Both paragraphs (the second unclosed), the <i> title kept as text, no author or rating.
    assert review.text == am.ALBUM_REVIEW
    # Nothing from the navigation, sidebar themes, track listing, scripts or footer.
    assert "Discover" not in review.text and "Late Night" not in review.moods and "Blue Night" not in review.text


def test_parse_page_falls_back_to_json_ld():
    html = am.review_page("song", am.STATIC, "Static", "Noise Unit", ["Electronic"], [], ["Harsh"], None, markup=False)
    review = parse_page(html)
    assert (review.title, review.artist, review.genres, review.styles, review.moods, review.text) == (
        "Static", "Noise Unit", ["Electronic"], [], ["Harsh"], "")


def test_review_sentences():
    assert sentences("Drummer J.J. Carter joined Mr. Brown's band. It swung. \u201cHi.\u201d Then 2 more.") == [
        "Drummer J.J. Carter joined Mr. Brown's band.", "It swung.", "\u201cHi.\u201d", "Then 2 more."]
    # The first descriptive sentences (about the sound), not the band's history; at most 3.
    assert review_captions(am.ALBUM_REVIEW) == [
        "The slow, brushed ballads are built on warm upright bass and sparse, lyrical piano lines.",
        "Its mid-tempo swing numbers feature a breathy tenor saxophone over a relaxed groove.",
        "Few records of the decade sound this intimate.",
    ]
    assert review_captions("It was recorded in Paris in 1962. The label reissued it twice.") == []


# -- URL list ---------------------------------------------------------------------------------

def test_url_list_records(url_run):
    root, fx, records, rejected, _ = url_run
    exp = fx["expected"]
    assert len(records) == exp["records"]
    assert {tid: r.split for tid, r in records.items()} == exp["splits"]

    blue_id, smoke_id = exp["album_ids"]
    assert blue_id.startswith("allmusic-mw0000123456-01_Blue_Night-")
    blue, smoke = records[blue_id], records[smoke_id]
    album_captions = [
        "The slow, brushed ballads are built on warm upright bass and sparse, lyrical piano lines.",
        "Its mid-tempo swing numbers feature a breathy tenor saxophone over a relaxed groove.",
        "Few records of the decade sound this intimate.",
        "A nocturnal, relaxed, sophisticated hard bop, modal music and jazz track.",
        "Hard bop, modal music and jazz music. The mood is nocturnal, relaxed and sophisticated.",
    ]
    # One album review, one record per library track of that album (the "(Remastered)" album
    # tag still matches), each with the album's captions; "Other Album" is not matched.
    assert blue.captions == album_captions and smoke.captions == album_captions
    assert blue.tags == ["Jazz", "Hard Bop", "Modal Music", "Nocturnal", "Relaxed", "Sophisticated"]
    assert blue.audio == PathAudio(root=str(root / "library"), path="Miles Quartet/Night Sessions/01 Blue Night.flac")
    assert smoke.audio.path == "Miles Quartet/Night Sessions/02 Smoke Rings.mp3"
    assert blue.group == "allmusic:mw0000123456:Miles Quartet/Night Sessions/01 Blue Night.flac"
    assert blue.split == smoke.split == ALBUM_SPLIT
    assert blue.licence == LICENCE == "AllMusic review (used with permission); audio: the user's own library"
    assert (blue.whole_track, blue.clip_seconds, blue.start_s, blue.end_s) == (True, None, None, None)
    assert blue.meta == {"allmusic_id": "mw0000123456", "kind": "album", "artist": "Miles Quartet",
                         "path": "Miles Quartet/Night Sessions/01 Blue Night.flac", "allmusic_url": am.ALBUM,
                         "album": "Night Sessions", "title": "Blue Night", "duration_s": 6.0}
    assert not any("Elsewhere" in r.audio.path for r in records.values())

    engine = records["allmusic-mt0001234567"]
    # A song page matches one track by artist/title ("Engine (2011 Remaster)" in the tags).
    assert engine.audio.path == "Thunder Road Band - Engine.mp3"
    assert engine.group == "allmusic:mt0001234567"
    assert engine.captions[:2] == [
        "\u201cEngine\u201d opens with a pounding drum pattern and a distorted guitar riff that never lets up.",
        "The chorus is shouted by the whole band over stacked power chords.",
    ]
    assert "It was the group's biggest hit." not in engine.captions
    assert engine.tags == ["Pop/Rock", "Hard Rock", "Arena Rock", "Aggressive", "Rousing"]
    assert engine.meta["title"] == "Engine" and engine.meta["artist"] == "Thunder Road Band"

    static = records["allmusic-mt0002222222"]  # no review: genre/mood sentences only
    assert static.captions == ["Electronic music. The mood is harsh.", "This is a harsh electronic song."]
    assert static.audio.path == "Noise Unit - Static.mp3"  # matched by file name; its fetch fails


def test_url_list_rejections(url_run):
    _, fx, _, rejected, _ = url_run
    assert set(rejected) == set(fx["expected"]["rejected"])
    for item, reason in fx["expected"]["rejected"].items():
        assert reason in rejected[item], (item, rejected[item])
    assert rejected[am.LOST] == "no audio in the library for Nobody Known - Lost Song (song)"
    assert rejected[am.SECRET] == "disallowed by robots.txt"
    assert rejected["urls.txt:12"] == f"mt0001234567 is listed twice (first as {am.ENGINE})"


def test_robots_and_crawl_delay(url_run):
    _, fx, _, _, log = url_run
    paths = [p for p, _ in log]
    # robots.txt first; the disallowed page and the bad/foreign/artist URLs are never requested.
    assert paths == fx["expected"]["fetched"]
    assert not any("secret" in p or "artist" in p or "bad-id" in p for p in paths)
    # requests_per_second is 20 (0.05 s), robots.txt says Crawl-delay: 1: pages 1 s apart.
    times = [t for p, t in log if p != "/site/robots.txt"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 4 and min(gaps) >= fx["expected"]["crawl_delay"] - 0.05, gaps


def test_rate_limit_without_crawl_delay(tmp_path):
    fx = am.make_fixture(tmp_path)
    (tmp_path / "site" / "robots.txt").write_text("User-agent: *\nDisallow: /album/secret-\n")
    urls = tmp_path / "metadata" / "few.txt"
    urls.write_text("\n".join([am.ALBUM, am.ENGINE, am.STATIC, am.SECRET]) + "\n")
    with am.serve(tmp_path) as (base, log):
        records, rejected = _run(_options(fx, base, urls=str(urls), requests_per_second=4))
    assert len(records) == 4 and set(rejected) == {am.SECRET}
    times = [t for _, t in log]  # robots.txt and 3 pages
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3 and min(gaps) >= 0.25 - 0.05, gaps
    assert min(gaps) < 0.9  # no 1 s crawl delay when robots.txt sets none


def test_robots_disallow_all_for_our_agent(tmp_path):
    fx = am.make_fixture(tmp_path)
    (tmp_path / "site" / "robots.txt").write_text("User-agent: musictext-ingest\nDisallow: /\n\n"
                                                  "User-agent: *\nDisallow:\n")
    with am.serve(tmp_path) as (base, log):
        records, rejected = _run(_options(fx, base))
    assert records == {}
    assert rejected[am.ALBUM] == "disallowed by robots.txt"
    assert [p for p, _ in log] == ["/site/robots.txt"]


def test_missing_robots_allows_and_forbidden_robots_disallows(tmp_path):
    fx = am.make_fixture(tmp_path)
    urls = tmp_path / "metadata" / "one.txt"
    urls.write_text(am.ENGINE + "\n")
    (tmp_path / "site" / "robots.txt").unlink()  # 404: no rules, everything allowed
    with am.serve(tmp_path) as (base, log):
        records, rejected = _run(_options(fx, base, urls=str(urls)))
    assert list(records) == ["allmusic-mt0001234567"] and rejected == {}
    # 403 on robots.txt: everything disallowed (RFC 9309), and said so in the reason.
    with am.serve(tmp_path, status={"/site/robots.txt": 403}) as (base, log):
        records, rejected = _run(_options(fx, base, urls=str(urls)))
    assert records == {}
    assert rejected[am.ENGINE].startswith("disallowed by robots.txt (robots.txt unreadable: HTTP 403")
    assert [p for p, _ in log] == ["/site/robots.txt"]


def test_relative_urls_file_resolves_against_metadata(url_run, tmp_path):
    root, fx, *_ = url_run
    # Only the rejection paths that need no server: nothing listed is fetched except robots.
    lst = root / "metadata" / "offline.txt"
    lst.write_text(am.ARTIST + "\n" + am.SHORT_ID + "\n")
    with am.serve(root) as (base, log):
        records, rejected = _run(_options(fx, base, urls="offline.txt"), meta_dir=str(root / "metadata"))
    assert records == {} and set(rejected) == {am.ARTIST, am.SHORT_ID}
    assert [p for p, _ in log] == ["/site/robots.txt"]


# -- exports ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["export.csv", "export.jsonl"])
def test_export(name, url_run, tmp_path):
    _, _, url_records, *_ = url_run
    work = tmp_path
    fx = am.make_export_fixture(work, name)
    exp = fx["expected"]
    records, rejected = _run(fx["options"])
    check_expected((records, rejected), exp)  # records, rejections, each record's split
    # Same review, same records as the page (audio under this copy of the library).
    for tid in [*exp["album_ids"], "allmusic-mt0001234567"]:
        want = url_records[tid].row()
        got = records[tid].row()
        assert got["captions"] == want["captions"] and got["tags"] == want["tags"]
        assert got["group"] == want["group"] and got["audio"]["path"] == want["audio"]["path"]
        assert got["audio"]["root"] == str(work / "library")
    if name == "export.jsonl":  # an "id" field instead of a URL
        static = records["allmusic-mt0002222222"]
        assert static.captions == ["Electronic music. The mood is harsh.", "This is a harsh electronic song."]
        assert "allmusic_url" not in static.meta
    else:
        assert rejected["export.csv:6"] == "no audio in the library for Nobody Known - Lost Song (song)"
        assert rejected["export.csv:8"].startswith("mn0000111111 is an artist page")


def test_export_with_bad_utf8_is_rejected_whole(tmp_path):
    (tmp_path / "lib").mkdir()
    export = tmp_path / "export.csv"
    data = b"url,artist,title,review\r\n" + am.ENGINE.encode() + b",Band,Caf\xe9,Loud guitars.\r\n"
    export.write_bytes(data)
    records, rejected = _run({"permission": True, "export": str(export), "library": str(tmp_path / "lib")})
    assert records == {}
    assert rejected == {"export.csv": f"file rejected: not valid UTF-8 (byte offset {data.index(bytes([0xE9]))})"}
