"""The MagnaTagATune source reads the tab-separated annotations (quoted or not, all 188 tag
columns), joins clip_info, writes captions from merged tag facets and splits by folder."""

from __future__ import annotations

import io
import zipfile

import pytest

from musictext.ingest.sources.magnatagatune import (
    BASE_URL,
    SPLIT_BY_FOLDER,
    TAG_FACETS,
    MagnaTagATuneSource,
    tag_facets,
)
from tests.datasets import check_expected, parse_source, source_fixtures
from tests.datasets.magnatagatune import TAGS, annotations_csv, clip_info_csv, make_fixture

made, parsed = source_fixtures(make_fixture, MagnaTagATuneSource, "http://mirror.test")


def _parse(meta_dir, **options):
    return parse_source(MagnaTagATuneSource, meta_dir, **options)


def test_records_splits_and_rejections_match_the_fixture(made, parsed):
    check_expected(parsed, made.info["expected"])  # records, splits, rejections, audio_fail listed
    assert sorted(parsed.records) == ["magnatagatune-10", "magnatagatune-2", "magnatagatune-20",
                                      "magnatagatune-35644", "magnatagatune-6"]


def test_one_record_in_full(parsed):
    records, _ = parsed
    r = records["magnatagatune-2"]
    assert r.source == "magnatagatune" and r.split == "test"  # folder f
    assert r.tags == ["classical", "violins", "strings", "violin", "no vocals", "slow"]  # column order
    assert len(r.captions) == 2
    assert set(r.captions) <= {
        "A classical track with violin and strings, slow (instrumental).",
        "Classical music featuring violin and strings. The tempo is slow. It is instrumental.",
        "The sound of violin and strings in a classical piece, instrumental.",
    }
    assert r.licence == "CC-BY-NC-SA-3.0"
    assert r.audio.kind == "archive" and r.audio.format == "zip"
    assert r.audio.urls == tuple(f"http://mirror.test/audio/mp3.zip.00{i}" for i in (1, 2, 3))
    assert r.audio.member == "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3"
    assert r.start_s is None and r.end_s is None
    assert r.group == "mtat:2"
    assert (r.clip_seconds, r.max_clips, r.whole_track) == (10.0, 2, False)
    assert r.meta == {
        "artist": "American Bach Soloists", "title": "BWV54 - I Aria", "album": "J.S. Bach Solo Cantatas",
        "track_number": 1, "segment_start_s": 30, "segment_end_s": 59,
        "track": "american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria",
    }


def test_clips_of_one_track_stay_distinct_items_in_one_split(made):
    root, _ = made
    records, _ = _parse(root / "metadata")
    a, b = records["magnatagatune-2"], records["magnatagatune-6"]
    assert a.meta["track"] == b.meta["track"] and a.split == b.split == "test"
    assert a.group != b.group  # same null span: one group would merge two different clips


def test_synonyms_and_typos_are_merged_in_captions(made):
    root, _ = made
    records, _ = _parse(root / "metadata")
    r10 = records["magnatagatune-10"]  # "no voice" + "no singer"
    assert {"no voice", "no singer"} <= set(r10.tags)
    for caption in r10.captions:
        assert caption.count("instrumental") == 1 and "no voice" not in caption and "singer" not in caption
    r6 = records["magnatagatune-6"]  # "harpsicord" (the dataset's typo) + "harpsichord"
    assert "harpsicord" in r6.tags
    for caption in r6.captions:
        assert caption.count("harpsichord") == 1 and "harpsicord" not in caption
    r20 = records["magnatagatune-20"]  # "female vocal" + "woman" + "vocals"
    for caption in r20.captions:
        assert caption.count("female vocals") == 1 and caption.count("vocals") == 1
    assert set(r20.captions) <= {"The sound of female vocals in a pop and rock piece.",
                                 "A pop and rock track with female vocals.",
                                 "Pop and rock music featuring female vocals."}


def test_facet_table_covers_every_real_tag_column():
    assert len(TAGS) == 188
    assert set(TAG_FACETS) == set(TAGS)
    f = tag_facets(["no vocals", "male voice", "singing", "clasical", "quick", "eerie", "no piano"])
    assert f.genre == ["classical"] and f.mood == ["eerie"] and f.tempo == ["fast"]
    assert f.instrument == ["male vocals"]  # bare "vocals" dropped next to male vocals
    assert f.other == ["instrumental"]
    assert tag_facets(["not rock", "lol", "different"]).empty()


def test_published_header_and_quoting(made):
    root, _ = made
    text = (root / "metadata" / "annotations_final.csv").read_text()
    header = text.split("\n", 1)[0].split("\t")
    assert header[0] == '"clip_id"' and header[-1] == '"mp3_path"' and len(header) == 190
    assert [h.strip('"') for h in header[1:-1]] == TAGS
    assert header[1:5] == ['"no voice"', '"singer"', '"duet"', '"plucking"']


def test_unquoted_crlf_copy_gives_the_same_records(made, tmp_path):
    root, _ = made
    (tmp_path / "annotations_final.csv").write_text(annotations_csv(quoted=False, newline="\r\n"), newline="")
    (tmp_path / "clip_info_final.csv").write_text(clip_info_csv(quoted=False), newline="")
    plain, plain_rej = _parse(tmp_path)
    quoted, quoted_rej = _parse(root / "metadata")
    assert {k: v.row() for k, v in plain.items()} == {k: v.row() for k, v in quoted.items()}
    assert plain_rej == quoted_rej and len(plain_rej) == 4  # same items, same line numbers


def test_without_clip_info_the_records_stay(made, tmp_path):
    root, _ = made
    (tmp_path / "annotations_final.csv").write_bytes((root / "metadata" / "annotations_final.csv").read_bytes())
    records, _ = _parse(tmp_path)
    assert len(records) == 5
    r = records["magnatagatune-20"]
    assert r.meta == {"track": "lisa_debenedictis-fruitless-02-fruitless"}
    assert r.audio.urls == tuple(f"{BASE_URL}/mp3.zip.00{i}" for i in (1, 2, 3))  # the published URLs
    assert BASE_URL == "https://mirg.city.ac.uk/datasets/magnatagatune"


def test_latin1_clip_info_keeps_accents(made, tmp_path):
    root, _ = made
    (tmp_path / "annotations_final.csv").write_bytes((root / "metadata" / "annotations_final.csv").read_bytes())
    text = clip_info_csv().replace("Jeff Wahl", "Jürgen Wahl")
    (tmp_path / "clip_info_final.csv").write_bytes(text.encode("latin-1"))
    records, _ = _parse(tmp_path)
    assert records["magnatagatune-10"].meta["artist"] == "Jürgen Wahl"


def test_split_by_folder():
    assert [SPLIT_BY_FOLDER[f] for f in "0123456789abcdef"] == ["train"] * 12 + ["valid"] + ["test"] * 3


def test_missing_annotations_names_the_file(tmp_path):
    (tmp_path / "clip_info_final.csv").write_text(clip_info_csv())
    with pytest.raises(FileNotFoundError, match="annotations_final.csv"):
        _parse(tmp_path)


def test_audio_parts_join_into_the_published_zip(made):
    root, _ = made
    parts = [(root / "audio" / f"mp3.zip.00{i}").read_bytes() for i in (1, 2, 3)]
    assert all(parts)
    zf = zipfile.ZipFile(io.BytesIO(b"".join(parts)))
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(parts[0]))  # one part alone is no zip
    info = {i.filename: i.file_size for i in zf.infolist()}
    assert info["d/strojovna_07-dirnix-06-basetra_noje-204-233.mp3"] == 0  # the empty MP3
    assert info["c/lisa_debenedictis-fruitless-02-fruitless-146-175.mp3"] > 1000
    assert len(info) == 5
    import soundfile as sf

    data, sr = sf.read(io.BytesIO(zf.read("0/jeff_wahl-guitarscapes-03-spanish_sun-0-29.mp3")))
    assert sr == 16000 and data.ndim == 1 and 3.5 < len(data) / sr < 4.5
