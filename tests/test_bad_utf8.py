"""A row with bytes that are not UTF-8 costs that row, named with its line and byte offset; the
rest of the published file is kept."""

from __future__ import annotations

import importlib

import pytest

from musictext.ingest.base import published_text
from musictext.ingest.registry import get_source
from musictext.rejects import Rejections
from tests.datasets import parse_source


def test_published_text_blanks_bad_lines_and_keeps_line_numbers():
    data = "a,b\r\nfine,1\r\n".encode() + b"bad \xff caption,2\r\n" + "caf\u00e9,3\r\n".encode()
    rejections = Rejections("list")
    with_bom = b"\xef\xbb\xbf" + data
    text = published_text(with_bom, "x.csv", rejections)
    assert text.split("\r\n") == ["a,b", "fine,1", "", "caf\u00e9,3", ""]
    # The offset counts from the file's first byte, BOM included: 3 + 5 + 8 + len("bad ") = 20.
    assert with_bom.index(b"\xff") == 20
    assert rejections.rows == [{"stage": "list", "item": "x.csv:3", "reason": "not valid UTF-8 (byte offset 20)"}]
    with pytest.raises(UnicodeDecodeError):
        published_text(data, "x.csv", None)


@pytest.mark.parametrize("name,file", [("musiccaps", "musiccaps-public.csv"), ("song_describer", "song_describer.csv")])
def test_a_bad_byte_in_a_caption_rejects_only_its_row(tmp_path, name, file):
    fixture = importlib.import_module(f"tests.datasets.{name}").make_fixture(tmp_path / "site")
    meta = tmp_path / "site" / "metadata"
    path = next(meta.rglob(file))
    lines = path.read_bytes().split(b"\n")
    # The last line with a comma-separated record: poison one of its bytes.
    target = max(i for i, line in enumerate(lines) if line.count(b",") >= 3)
    lines[target] = lines[target].replace(b",", b",\xfe", 1)
    path.write_bytes(b"\n".join(lines))
    parsed = parse_source(type(get_source(name)), str(meta))
    bad = {item: reason for item, reason in parsed.rejected.items() if "UTF-8" in reason}
    assert list(bad) == [f"{file}:{target + 1}"] and "byte offset" in next(iter(bad.values()))
    assert len(parsed.records) >= fixture["expected"]["records"] - 1
