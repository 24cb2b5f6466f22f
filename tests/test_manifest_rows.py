"""The typed rows stages hand each other (musictext.manifest): a bad row is rejected with its id
and the reason, never read loosely and never allowed to sink the stage."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from musictext import layout, schema
from musictext.manifest import (
    ClipAudio,
    ClipCaptions,
    ClipRow,
    TrackRow,
    confined,
    read_clip_rows,
    read_manifest,
    relative_path,
    validate_row,
)
from musictext.rejects import ItemError, Rejections

TRACK = {"track_id": "t1", "source": "fixture", "split": "train", "path": "audio/t1.wav",
         "captions": ["  a calm piano  ", ""], "tags": ["piano"], "licence": "CC0-1.0"}
REF = {"rendering": "mono24k", "sample_rate": 24000, "channels": 1, "path": "audio/mono24k/c.wav"}
CLIP = {"clip_id": "t1#0", "track_id": "t1", "source": "fixture", "split": "test", "audio": [REF],
        "start_s": 0.0, "end_s": 5.0, "captions": ["a calm piano"], "tags": [], "licence": "CC0-1.0", "phase": 1}


@pytest.mark.parametrize("rel,want", [("audio/x.wav", "audio/x.wav"), ("audio/./x.wav", "audio/x.wav"),
                                      ("audio/sub/../x.wav", "audio/x.wav"), ("a\\b.wav", "a/b.wav")])
def test_relative_paths_inside_the_shard_are_kept(rel, want):
    assert relative_path(rel) == want


@pytest.mark.parametrize("rel,words", [
    ("../x.wav", "leaves its directory"), ("a/../../x.wav", "leaves its directory"), ("..", "leaves"),
    ("/etc/passwd", "absolute or a URL"), ("http://evil/x.wav", "absolute or a URL"),
    ("gs://other/x.wav", "absolute or a URL"), ("C:\\x.wav", "absolute or a URL"), ("\\\\host\\x", "absolute"),
    ("a/../c:x.wav", "absolute or a URL"), ("./file:x.wav", "absolute or a URL"),  # once normalised
])
def test_paths_that_leave_the_shard_are_refused(rel, words):
    with pytest.raises(ValueError, match=words):
        relative_path(rel)
    with pytest.raises(ItemError, match=f"item: .*{words}.*: outside the shard"):
        confined("/shard", rel, "item", where="the shard")


@pytest.mark.parametrize("rel", ["audio/x.wav", "audio/sub/../x.wav", "a\\b.wav", "./x.wav"])
def test_a_checked_path_passes_again_unchanged(rel):
    norm = relative_path(rel)
    assert relative_path(norm) == norm and confined("/shard", norm, "x") == f"/shard/{norm}"


def test_a_good_track_row_is_normalised():
    row = TrackRow.model_validate(TRACK)
    assert row.captions == ["a calm piano"] and row.path == "audio/t1.wav" and row.phase is None


@pytest.mark.parametrize("field,value,words", [
    ("captions", 5, "captions: Input should be a valid list (got 5)"),
    ("captions", "a caption", "captions: Input should be a valid list"),
    ("captions", [1, "x"], "captions.0: Input should be a valid string"),
    ("captions", ["", "  "], "captions: no non-blank captions"),
    ("track_id", 7, "track_id: Input should be a valid string"),
    ("split", "dev", "split: Input should be 'train', 'valid' or 'test'"),
    ("start_s", "1.5", "start_s: Input should be a valid number"),
    ("start_s", -1.0, "start_s: Input should be greater than or equal to 0"),
    ("end_s", float("nan"), "end_s: Input should be a finite number"),
    ("clip_seconds", 0, "clip_seconds: Input should be greater than 0"),
    ("whole_track", 1, "whole_track: Input should be a valid boolean"),
    ("phase", 3, "phase: Input should be 1 or 2 (got 3)"),
    ("path", "../../etc/passwd", "path: path '../../etc/passwd' leaves its directory"),
    ("path", "/etc/passwd", "path: path '/etc/passwd' is absolute or a URL"),
    ("path", "https://example.com/a.wav", "is absolute or a URL"),
])
def test_a_mistyped_track_row_is_refused_with_the_field_and_reason(field, value, words):
    with pytest.raises(ItemError) as err:
        validate_row(TrackRow, {**TRACK, field: value}, "t1", what="manifest row")
    assert err.value.item == "t1" and err.value.reason.startswith("bad manifest row: ") and words in err.value.reason


def test_a_row_missing_fields_names_them():
    with pytest.raises(ItemError, match=r"manifest row lacks \['source', 'captions', 'licence'\]"):
        validate_row(TrackRow, {"track_id": "p", "split": "train", "path": "a.wav"}, "p", what="manifest row")


def test_read_manifest_keeps_good_rows_and_names_each_bad_line(tmp_path):
    lines = [
        json.dumps(TRACK).encode(),
        b"",
        json.dumps({**TRACK, "track_id": "t2", "captions": 5}).encode(),
        json.dumps({**TRACK, "track_id": "t3", "captions": ["x"]}).encode().replace(b'"x"', b'"caf\xe9"'),
        b"{not json",
        b"[1, 2]",
        json.dumps({**TRACK, "captions": ["a second t1"]}).encode(),
        json.dumps({**TRACK, "track_id": "t4", "path": "../t4.wav"}).encode(),
        json.dumps({**TRACK, "track_id": "t5"}).encode(),
    ]
    data = b"\n".join(lines) + b"\n"
    (tmp_path / layout.MANIFEST).write_bytes(data)
    rejections = Rejections("clip")
    rows, entries = read_manifest(str(tmp_path), rejections)
    assert [r.track_id for r in rows] == ["t1", "t5"] and entries == 8
    offset = data.index(b"\xe9")
    got = {r["item"]: r["reason"] for r in rejections.rows}
    assert got == {
        "t2": "bad manifest row: captions: Input should be a valid list (got 5)",
        "manifest.jsonl:4": f"not valid UTF-8 (byte offset {offset})",
        "manifest.jsonl:5": "not valid JSON (Expecting property name enclosed in double quotes)",
        "manifest.jsonl:6": "manifest row is not a JSON object",
        "t1": "duplicate track id (manifest.jsonl:7)",
        "t4": "bad manifest row: path: path '../t4.wav' leaves its directory",
    }


def _clip_shard(path, rows, table_schema=schema.CLIP_SCHEMA) -> str:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=table_schema), path / layout.CLIPS)
    return str(path)


def test_clip_rows_are_checked_by_what_each_stage_reads(tmp_path):
    shard = _clip_shard(tmp_path / "s", [
        CLIP,
        {**CLIP, "clip_id": "esc#0", "audio": [{**REF, "path": "../../etc/passwd"}]},
        {**CLIP, "clip_id": "split#0", "split": "dev"},
        {**CLIP, "clip_id": "phase#0", "phase": 4},
        {**CLIP, "clip_id": None},
    ])
    audio, text, whole = Rejections("embed_audio"), Rejections("prepare_text"), Rejections("merge_shards")
    assert [r.clip_id for r in read_clip_rows(shard, ClipAudio, audio)] == ["t1#0", "phase#0"]
    assert [r.clip_id for r in read_clip_rows(shard, ClipCaptions, text)] == ["t1#0", "esc#0"]
    assert [r.clip_id for r in read_clip_rows(shard, ClipRow, whole)] == ["t1#0"]
    nameless = f"{shard}/{layout.CLIPS}:row 4"
    assert {r["item"] for r in audio.rows} == {"esc#0", "split#0", nameless}
    assert {r["item"] for r in text.rows} == {"split#0", "phase#0", nameless}
    assert {r["item"] for r in whole.rows} == {"esc#0", "split#0", "phase#0", nameless}
    reasons = {r["item"]: r["reason"] for r in whole.rows}
    assert reasons["esc#0"] == "bad clip row: audio.0.path: path '../../etc/passwd' leaves its directory"
    assert reasons[nameless] == "bad clip row: clip_id: Input should be a valid string (got None)"


def test_a_mistyped_clips_column_rejects_its_rows_not_the_shard(tmp_path):
    """A clips.parquet from another writer, its captions column numbers: every row is named."""
    mistyped = pa.schema([f if f.name != "captions" else pa.field("captions", pa.int64()) for f in schema.CLIP_SCHEMA])
    shard = _clip_shard(tmp_path / "s", [{**CLIP, "captions": 5}, {**CLIP, "clip_id": "t2#0", "captions": 6}],
                        mistyped)
    rejections = Rejections("prepare_text")
    assert read_clip_rows(shard, ClipCaptions, rejections) == []
    assert rejections.rows == [
        {"stage": "prepare_text", "item": "t1#0", "reason": "bad clip row: captions: Input should be a valid list (got 5)"},
        {"stage": "prepare_text", "item": "t2#0", "reason": "bad clip row: captions: Input should be a valid list (got 6)"},
    ]


def test_a_clip_row_with_bytes_that_are_not_utf8_is_rejected_alone(tmp_path):
    """Parquet strings are not checked when written by other tools: the bad row goes, not the shard."""
    good = pa.Table.from_pylist([CLIP, {**CLIP, "clip_id": "t2#0"}], schema=schema.CLIP_SCHEMA)
    raw = b"t1#0" + b"t\xff#0"
    ids = pa.Array.from_buffers(pa.string(), 2, [None, pa.array([0, 4, 8], pa.int32()).buffers()[1], pa.py_buffer(raw)])
    table = good.set_column(0, "clip_id", ids)
    (tmp_path / "s").mkdir()
    pq.write_table(table, tmp_path / "s" / layout.CLIPS)
    rejections = Rejections("merge_shards")
    assert [r.clip_id for r in read_clip_rows(str(tmp_path / "s"), ClipRow, rejections)] == ["t1#0"]
    assert rejections.rows == [{"stage": "merge_shards", "item": f"{tmp_path / 's'}/{layout.CLIPS}:row 1",
                                "reason": "not valid UTF-8 (invalid start byte at byte 1 of a string)"}]
