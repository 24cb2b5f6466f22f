"""MTG-Jamendo: parsing the published layout (tests/datasets/jamendo.py) into records."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile

import pytest
import soundfile as sf
from musictext.ingest.base import hashed_split
from musictext.ingest.sources.jamendo import (
    JamendoSource,
    licence_name,
    link_target,
    parse_audio_licences,
    tag_facets,
)
from musictext.rejects import Rejections

from tests.datasets import check_expected, parse_fixture, parse_source, source_fixtures
from tests.datasets import jamendo as fixture

MIRROR = "http://mirror.test"
BASE = f"{MIRROR}/audio"  # the fixture's audio_base_url, "{base}/audio"

made, parsed = source_fixtures(fixture.make_fixture, JamendoSource, MIRROR)


def parse(made, **options):
    return parse_fixture(JamendoSource, made, MIRROR, **options)


def sha_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listed(root, name) -> dict[str, str]:
    text = (root / "metadata" / "data" / "download" / name).read_text()
    return {line.split(" ")[1]: line.split(" ")[0] for line in text.splitlines()}


def test_record_values(made, parsed):
    root, fx = made
    records, _ = parsed
    assert len(records) == fx["expected"]["records"] == 8

    r = records["jamendo-track_0000214"]
    assert r.source == "jamendo" and r.split == "test"
    assert r.captions == ["A punk rock track.", "Punk rock music.", "This is a punk rock song."]
    assert r.tags == ["punkrock"]
    assert r.group == "jamendo:214"
    assert r.start_s is None and r.end_s is None
    assert (r.clip_seconds, r.max_clips, r.whole_track) == (30.0, 3, False)
    # per-track licence from audio_licenses.txt
    assert r.licence == "CC BY-NC-SA 4.0 (metadata); audio: CC BY-NC-SA 2.0 (Jamendo)"
    assert r.meta == {"artist_id": 14, "album_id": 31, "duration_s": 124.6, "path": "14/214.mp3",
                      "in_split_files": True, "licence_url": "http://creativecommons.org/licenses/by-nc-sa/2.0/",
                      "attribution": "Intro chiante by David TMX"}
    a = r.audio
    assert a.kind == "archive" and a.format == "tar"
    assert a.urls == (f"{BASE}/raw_30s/audio-low/raw_30s_audio-low-14.tar",)
    assert a.member == "14/214.low.mp3"
    tar = root / "audio" / "raw_30s" / "audio-low" / "raw_30s_audio-low-14.tar"
    assert a.sha256 == sha_of(tar) == listed(root, "raw_30s_audio-low_sha256_tars.txt")["raw_30s_audio-low-14.tar"]
    assert a.member_sha256 == listed(root, "raw_30s_audio-low_sha256_tracks.txt")["14/214.low.mp3"]

    # a 7-digit id: the PATH folder is id % 100 and the id is not padded
    big = records["jamendo-track_1418302"]
    assert big.audio.member == "02/1418302.low.mp3"
    assert big.audio.urls == (f"{BASE}/raw_30s/audio-low/raw_30s_audio-low-02.tar",)
    assert big.group == "jamendo:1418302"
    assert big.licence == "CC BY-NC-SA 4.0 (metadata); audio: Licence Art Libre (Jamendo)"
    assert big.tags == ["classical", "orchestral", "orchestra", "voice", "epic", "film"]
    joined = " ".join(big.captions)
    assert "vocals" in joined and "film music" in joined and "epic" in joined and "---" not in joined

    # facets in words: squashed tags split, slow -> tempo
    jazz = records["jamendo-track_0001014"]
    assert jazz.licence.endswith("audio: CC BY-NC-ND 2.5 (Jamendo)")
    assert "A calm easy listening and jazz track with double bass and piano, slow." in jazz.captions
    assert len(set(jazz.captions)) == 3

    # no licence block: the dataset's licence string
    assert records["jamendo-track_0004402"].licence == JamendoSource.licence
    assert records["jamendo-track_0004402"].meta["duration_s"] == 487.7


def test_splits(made, parsed):
    splits = {k: r.split for k, r in parsed.records.items()}
    assert splits == {
        "jamendo-track_0000214": "test", "jamendo-track_0012314": "test",
        "jamendo-track_0004402": "valid",  # autotagging-validation.tsv
        "jamendo-track_0001014": "train", "jamendo-track_1418302": "train", "jamendo-track_0007714": "train",
        # in no split file: the split of its artist's tracks (artist 14 -> 214, test)
        "jamendo-track_0031602": "test",
        # in no split file, artist unknown to the split set: hashed by artist
        "jamendo-track_0060002": hashed_split("jamendo-artist:9999", 0),
    }
    assert parsed.records["jamendo-track_0031602"].meta["in_split_files"] is False
    counts = {s: list(splits.values()).count(s) for s in ("train", "valid", "test")}
    assert counts == made.info["expected"]["splits"]

    other, _ = parse(made, split=1)  # the option picks data/splits/split-1
    assert {k: r.split for k, r in other.items() if k in {
        "jamendo-track_0000214", "jamendo-track_0001014", "jamendo-track_1418302", "jamendo-track_0031602"}} == {
        "jamendo-track_0000214": "train", "jamendo-track_0001014": "valid",
        "jamendo-track_1418302": "test", "jamendo-track_0031602": "train"}


def test_rejections(made, parsed):
    check_expected(parsed, made.info["expected"])  # records, splits, rejections, audio_fail listed
    got = parsed.rejected
    assert got["raw_30s_cleantags_50artists.tsv:5"] == "bad DURATION 'n/a'"
    assert "want 77/777.mp3" in got["raw_30s_cleantags_50artists.tsv:9"]


def test_crlf_tags_as_columns(made):
    root, _ = made
    data = root / "metadata" / "data"
    for path in [data / fixture.MAIN, *sorted((data / "splits").rglob("*.tsv"))]:
        raw = path.read_bytes()
        assert raw.startswith(b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n")
        assert raw.count(b"\n") == raw.count(b"\r\n")  # CRLF everywhere
    # tags are extra columns: the 1014 row has 6 tag columns after DURATION
    line = next(x for x in (data / fixture.MAIN).read_bytes().split(b"\r\n") if x.startswith(b"track_0001014"))
    assert len(line.split(b"\t")) == 5 + 6


def test_symlink_text(made, tmp_path):
    root, _ = made
    link = root / "metadata" / "data" / "autotagging.tsv"
    assert link.read_bytes() == b"raw_30s_cleantags_50artists.tsv" and link.stat().st_size == 31
    assert link_target(link.read_bytes()) == "raw_30s_cleantags_50artists.tsv"
    assert link_target((root / "metadata" / "data" / fixture.MAIN).read_bytes()) is None

    # only the link was downloaded: a clear error naming the file it points to
    meta = tmp_path / "only-link"
    shutil.copytree(root / "metadata", meta)
    (meta / "data" / fixture.MAIN).unlink()
    src = JamendoSource()
    with pytest.raises(FileNotFoundError, match="symlink saved as text.*raw_30s_cleantags_50artists.tsv"):
        list(src.parse(str(meta), src.options({"metadata": str(meta)}), Rejections("list")))

    # a link whose target is present is followed
    shutil.copy(root / "metadata" / "data" / fixture.MAIN, meta / "data" / "raw_30s_cleantags.tsv")
    (meta / "data" / "autotagging.tsv").write_bytes(b"raw_30s_cleantags.tsv\n")
    records = list(src.parse(str(meta), src.options({"metadata": str(meta)}), Rejections("list")))
    assert len(records) == 8


def test_audio_quality_and_default_base(made):
    _, fx = made
    records, _ = parse(made, audio_quality="full")
    a = records["jamendo-track_0000214"].audio
    assert a.urls == (f"{BASE}/raw_30s/audio/raw_30s_audio-14.tar",) and a.member == "14/214.mp3"
    assert a.sha256 is None and a.member_sha256 is None  # the full-quality lists are not in the fixture

    src = JamendoSource()
    recs, _ = parse_source(JamendoSource, fx["options"]["metadata"], metadata=fx["options"]["metadata"])
    assert recs["jamendo-track_0000214"].audio.urls == (
        "https://cdn.freesound.org/mtg-jamendo/raw_30s/audio-low/raw_30s_audio-low-14.tar",)
    with pytest.raises(ValueError, match="audio_quality"):
        src.options({"audio_quality": "medium"})
    with pytest.raises(ValueError, match="split"):
        src.options({"split": 5})


def test_missing_split_set(made, tmp_path):
    root, _ = made
    meta = str(root / "metadata")
    with pytest.raises(FileNotFoundError, match="no split-2/autotagging-test.tsv"):
        parse_source(JamendoSource, meta, metadata=meta, split=2)
    bad = tmp_path / "bad"
    (bad / "data").mkdir(parents=True)
    (bad / "data" / fixture.MAIN).write_bytes(b"id\tpath\r\n1\t01/1.mp3\r\n")
    with pytest.raises(ValueError, match="header"):
        parse_source(JamendoSource, bad)


def test_published_files():
    pub = {f.name: f for f in JamendoSource.published}
    main = pub["raw_30s_cleantags_50artists.tsv"]
    assert main.required and main.aliases == ("autotagging.tsv",)
    assert main.url == "https://raw.githubusercontent.com/MTG/mtg-jamendo-dataset/master/data/raw_30s_cleantags_50artists.tsv"
    assert pub["splits/split-3/autotagging-validation.tsv"].url.endswith("data/splits/split-3/autotagging-validation.tsv")
    assert pub["raw_30s_audio-low_sha256_tracks.txt"].url.endswith("data/download/raw_30s_audio-low_sha256_tracks.txt")
    assert pub["audio_licenses.txt"].url.endswith("mtg-jamendo-dataset/master/audio_licenses.txt")
    assert JamendoSource.phase == 1


def test_fixture_archives_as_published(made):
    """The tars hold the folder first, then NN/<id>.low.mp3; 7714 is missing, 12314 is corrupt."""
    root, fx = made
    tracks = listed(root, "raw_30s_audio-low_sha256_tracks.txt")
    assert "14/7714.low.mp3" in tracks and "14/12314.low.mp3" in tracks
    folder = root / "audio" / "raw_30s" / "audio-low"
    with tarfile.open(folder / "raw_30s_audio-low-14.tar") as tar:
        first, *members = tar.getmembers()
        assert first.name == "14" and first.isdir()
        names = {m.name for m in members}
        assert "14/7714.low.mp3" not in names
        for m in members:
            data = tar.extractfile(m).read()
            ok = hashlib.sha256(data).hexdigest() == tracks[m.name]
            assert ok == (m.name != "14/12314.low.mp3")
            if ok:
                audio, sr = sf.read(io.BytesIO(data))
                assert sr == 22050 and audio.ndim == 1 and 5.5 < len(audio) / sr < 6.5
    assert set(fx["expected"]["audio_fail"]) == {"jamendo-track_0007714", "jamendo-track_0012314"}


def test_licence_parsing():
    text = (
        "14/214.mp3\nIntro chiante by David TMX from Jamendo: http://www.jamendo.com/track/214\n"
        "Available under a Creative Commons Attribution-Non-Commercial-Share-Alike license: "
        "http://creativecommons.org/licenses/by-nc-sa/2.1/au/\n\n"
        "39/5339.mp3\nCellule by Silence from Jamendo: http://www.jamendo.com/track/5339\n"
        "Available under License Art Libre: http://artlibre.org/licence/lal/\n\n"
    )
    lic = parse_audio_licences(text)
    assert lic[214].name == "CC BY-NC-SA 2.1 AU" and lic[214].attribution == "Intro chiante by David TMX"
    assert lic[214].url == "http://creativecommons.org/licenses/by-nc-sa/2.1/au/"
    assert lic[5339].name == "Licence Art Libre"
    # a one-line variant (TRACK_ID, ATTRIBUTION, LICENSE)
    one = parse_audio_licences("TRACK_ID\tATTRIBUTION\tLICENSE\n215\tAide toi by David TMX \t"
                               "Available under a Creative Commons Attribution license: "
                               "http://creativecommons.org/licenses/by/3.0/\n")
    assert one[215].name == "CC BY 3.0" and one[215].attribution == "Aide toi by David TMX"
    assert licence_name("http://creativecommons.org/publicdomain/zero/1.0/")[0] == "CC0 1.0"


def test_tag_facets():
    facets, plain = tag_facets(["genre---triphop", "mood/theme---fast", "mood/theme---christmas",
                                "instrument---drummachine", "genre---newtag", "instrument---drummachine"])
    assert facets.genre == ["trip hop", "newtag"] and facets.tempo == ["fast"]
    assert facets.other == ["Christmas music"] and facets.instrument == ["drum machine"]
    assert plain == ["triphop", "fast", "christmas", "drummachine", "newtag"]
