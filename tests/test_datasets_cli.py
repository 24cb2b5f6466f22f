"""`musictext datasets list|records|stats` on the real-format fixtures (no audio downloaded)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from musictext.ingest.records import Record
from musictext.ingest.registry import BUILTIN_SOURCES, available
from musictext_kfp.cli import main

FIXTURE_SOURCES = ["musiccaps", "audioset", "jamendo", "fma", "musicbench", "magnatagatune", "song_describer",
                   "musicqa"]


def test_list_prints_one_source_per_line_name_first():
    # In a process of its own, as a person runs it (kfp.local, run by other tests in this
    # process, indents everything print() writes).
    done = subprocess.run([sys.executable, "-m", "musictext_kfp.cli", "datasets", "list"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == available()
    assert len(lines) == len(BUILTIN_SOURCES) and all("phase" in line for line in lines)
    assert {"musiccaps", "audioset", "jamendo", "fma", "musicbench", "magnatagatune", "song_describer", "musicqa",
            "synthetic"} <= set(available())


@pytest.mark.parametrize("name", FIXTURE_SOURCES)
def test_records_parses_the_published_files_without_audio(tmp_path, capsys, name):
    fixture = importlib.import_module(f"tests.datasets.{name}").make_fixture(tmp_path / "site")
    out, rejected = tmp_path / "records.jsonl", tmp_path / "rejected.jsonl"
    options = [f"--option={k}={v}" for k, v in fixture["options"].items() if k != "metadata" and "{base}" not in str(v)]
    assert main(["datasets", "records", name, "--metadata", fixture["options"]["metadata"], "--out", str(out),
                 "--rejected", str(rejected), *options]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == fixture["expected"]["records"]
    for row in rows:
        Record(**row)  # every line is a valid unified record
        assert {"track_id", "source", "split", "captions", "tags", "licence", "audio", "start_s", "end_s",
                "group"} <= set(row)
        assert row["source"] == name and row["captions"] and all(c.strip() for c in row["captions"])
    assert len({r["track_id"] for r in rows}) == len(rows)
    bad = {json.loads(line)["item"] for line in rejected.read_text().splitlines()}
    assert set(fixture["expected"].get("rejected", {})) <= bad
    assert f"{name}: {len(rows)} records, {len(bad)} rejected" in capsys.readouterr().err
    assert not (tmp_path / "site" / "cache").exists()


def test_stats_counts_per_source(tmp_path, capsys):
    fixture = importlib.import_module("tests.datasets.musiccaps").make_fixture(tmp_path / "site")
    assert main(["datasets", "stats", "musiccaps", "--metadata", fixture["options"]["metadata"], "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["musiccaps"]
    assert stats["items"] == fixture["expected"]["records"]
    assert stats["hours"] == pytest.approx(stats["items"] * 10 / 3600, abs=1e-3)  # 10 s clips
    assert stats["rejected"] == len(fixture["expected"]["rejected"])
    assert stats["caption_words"]["max"] >= stats["caption_words"]["median"] >= stats["caption_words"]["min"] > 0
    assert main(["datasets", "stats", "musiccaps", "--metadata", fixture["options"]["metadata"]]) == 0
    table = capsys.readouterr().out
    assert "| musiccaps | 6 |" in table and "rejected" in table


def test_records_of_an_unknown_source_names_the_known_ones(capsys):
    with pytest.raises(ValueError, match="unknown source 'musicaps'; known sources"):
        main(["datasets", "records", "musicaps", "--metadata", "/nonexistent"])
