"""Caption cleaning and tokenisation into text.parquet."""

from __future__ import annotations

import pyarrow as pa
import pytest

from musictext import layout, schema, storage
from musictext.config import TextConfig
from musictext.text.prepare import clean_caption, load_tokenizer, prepare_text
from musictext.rejects import read_rejections


@pytest.mark.parametrize(
    "raw,lower,want",
    [
        ("  Soft <b>Piano</b>&amp;Strings\n\tpiece ", True, "soft piano &strings piece"),
        ("Soft <b>Piano</b>", False, "Soft Piano"),
        ("ﬁne Ｍｕｓｉｃ", False, "fine Music"),  # NFKC: ligature and full-width letters
        ("pi\u200bano\ufeff  solo", True, "piano solo"),  # zero-width space and BOM dropped
        ("a\x00b\x07c\r\nd", True, "a b c d"),  # control characters become spaces
        ("jazz\u00a0trio", True, "jazz trio"),  # no-break space (entity-free)
        ("jazz&nbsp;trio &#39;live&#39;", True, "jazz trio 'live'"),
        ("&amp;lt;i&amp;gt;Jazz&amp;lt;/i&amp;gt;", False, "Jazz"),  # double-escaped markup
        ("tempo < 90 > 60 bpm", True, "tempo < 90 > 60 bpm"),  # not markup: kept
        ("i <3 this <!-- hidden --> song<br/>", True, "i <3 this song"),
        ("<p>   </p>", True, ""),
        ("\u2028\u2029 \t", True, ""),
    ],
)
def test_clean_caption(raw, lower, want):
    assert clean_caption(raw, lowercase=lower) == want


def test_clean_caption_of_non_text_is_empty():
    assert clean_caption(None, lowercase=True) == ""


def _clip(clip_id: str, captions, split: str = "train") -> dict:
    return {"clip_id": clip_id, "track_id": clip_id.split("#")[0], "source": "fixture", "split": split,
            "audio": [{"sample_rate": 24000, "path": f"audio/24000/{clip_id}.flac"}],
            "start_s": 0.0, "end_s": 5.0, "captions": captions, "tags": [], "licence": "CC0-1.0"}


def _write_shard(path, clips) -> str:
    storage.write_parquet(str(path / layout.CLIPS), pa.Table.from_pylist(clips, schema=schema.CLIP_SCHEMA))
    return str(path)


LONG = "a very long caption about a slow sad piano melody " * 10


@pytest.fixture
def shards(tmp_path):
    a = _write_shard(tmp_path / "a", [
        _clip("t1#0", ["Slow <i>piano</i>", "slow piano", "  SLOW   PIANO ", "Fast drums"]),
        _clip("t2#0", ["<br>", "   ", "\u200b"]),  # nothing survives cleaning
        _clip("t3#0", ["", LONG], split="valid"),
    ])
    b = _write_shard(tmp_path / "b", [
        _clip("t4#0", ["Organ &amp; choir"], split="test"),
        _clip("t1#0", ["a second copy of t1"]),  # same clip id in another shard
    ])
    return [a, b]


def test_prepare_text_rows_tokens_and_rejections(shards, tmp_path):
    cfg = TextConfig(max_length=16)
    out = str(tmp_path / "text")
    summary = prepare_text(shards, out, cfg)
    table = storage.read_parquet(storage.join(out, layout.TEXT))
    assert table.schema.equals(schema.TEXT_SCHEMA)
    rows = table.to_pylist()
    got = [(r["clip_id"], r["caption_index"], r["text"], r["split"]) for r in rows]
    assert got == [
        ("t1#0", 0, "slow piano", "train"),
        ("t1#0", 1, "fast drums", "train"),
        ("t3#0", 0, LONG.strip(), "valid"),
        ("t4#0", 0, "organ & choir", "test"),
    ]
    tok = load_tokenizer(cfg.base_model)
    for r in rows:
        assert r["input_ids"] == tok(r["text"], truncation=True, max_length=16)["input_ids"]
    assert len(rows[2]["input_ids"]) == 16  # the long caption was truncated
    assert rows[2]["input_ids"][-1] == tok.sep_token_id
    assert summary == {"rows": 4, "clips": 3, "clips_in": 4, "rejected": 6}

    reasons = {r["item"]: r["reason"] for r in read_rejections(out)}
    assert reasons == {
        "t2#0 caption 0": "caption empty after cleaning",
        "t2#0 caption 1": "caption empty after cleaning",
        "t2#0 caption 2": "caption empty after cleaning",
        "t2#0": "no caption left after cleaning",
        "t3#0 caption 0": "caption empty after cleaning",
        "t1#0": "duplicate clip id across clip shards",
    }
    meta = storage.read_json(storage.join(out, layout.META))
    assert meta["tokenizer"] == "all-MiniLM-L6-v2" and meta["max_length"] == 16
    assert (meta["rows"], meta["clips"], meta["at_max_length"]) == (4, 3, 1)


def test_lowercase_off_keeps_case(shards, tmp_path):
    out = str(tmp_path / "text")
    prepare_text(shards[1:], out, TextConfig(lowercase=False))
    texts = storage.read_parquet(storage.join(out, layout.TEXT)).column("text").to_pylist()
    assert texts == ["Organ & choir", "a second copy of t1"]


def test_no_usable_caption_is_an_error(tmp_path):
    shard = _write_shard(tmp_path / "a", [_clip("x#0", ["<p></p>"])])
    with pytest.raises(ValueError, match="no usable captions"):
        prepare_text([shard], str(tmp_path / "text"), TextConfig())
    assert read_rejections(str(tmp_path / "text"))[-1]["item"] == "x#0"


def test_phase_is_copied_and_old_shards_read_as_clips(tmp_path):
    """A shard written before the phase column existed (CLIP_SCHEMA without it) reads as phase 1;
    a full song (phase 2) keeps its phase on every caption row."""
    new = _write_shard(tmp_path / "new", [{**_clip("song#0", ["a whole song", "the song again"]), "phase": 2},
                                          {**_clip("clip#0", ["a short clip"]), "phase": 1}])
    old_schema = pa.schema([f for f in schema.CLIP_SCHEMA if f.name != "phase"])
    (tmp_path / "old").mkdir()
    storage.write_parquet(str(tmp_path / "old" / layout.CLIPS),
                          pa.Table.from_pylist([_clip("legacy#0", ["an old clip"])], schema=old_schema))
    out = str(tmp_path / "text")
    prepare_text([new, str(tmp_path / "old")], out, TextConfig())
    table = storage.read_parquet(storage.join(out, layout.TEXT))
    assert table.schema.equals(schema.TEXT_SCHEMA)
    got = list(zip(table["clip_id"].to_pylist(), table["phase"].to_pylist()))
    assert got == [("song#0", 2), ("song#0", 2), ("clip#0", 1), ("legacy#0", 1)]
    assert storage.read_json(storage.join(out, layout.META))["clips_per_phase"] == {"1": 2, "2": 1}


def test_phase_column_of_old_and_bad_tables():
    assert schema.phase_column(pa.table({"clip_id": ["a", "b"]})).to_pylist() == [1, 1]
    with_nulls = pa.table({"phase": pa.array([2, None], pa.int8())})
    assert schema.phase_column(with_nulls).to_pylist() == [2, 1]
    assert schema.phase_column(with_nulls).type == pa.int8()
    with pytest.raises(ValueError, match=r"phase values \[3\]"):
        schema.phase_column(pa.table({"phase": [1, 3]}))


def test_a_row_with_a_bad_phase_is_rejected_by_name(tmp_path):
    shard = _write_shard(tmp_path / "a", [{**_clip("x#0", ["a clip"]), "phase": 5}, _clip("y#0", ["another"])])
    out = str(tmp_path / "text")
    assert prepare_text([shard], out, TextConfig())["clips"] == 1
    assert read_rejections(out) == [{"stage": "prepare_text", "item": "x#0",
                                     "reason": "bad clip row: phase: Input should be 1 or 2 (got 5)"}]
