"""Every dataset source end to end, offline: its fixture (the dataset's real published formats,
``tests/datasets/<source>.py``) served by a real HTTP server on 127.0.0.1, listed into shards,
each shard downloaded (archives, checksums, yt-dlp on local media), cut into clips; the
expected per-item failures land in rejected.jsonl and everything else is kept; a re-run
fetches nothing again."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from musictext import layout, storage
from musictext.clip.cut import clip_shard
from musictext.ingest.archives import close_all
from musictext.ingest.download import download_shard
from musictext.ingest.plan import plan
from musictext.ingest.records import read_records
from musictext.rejects import read_rejections
from tests.http_server import serve

ARCHIVE_SOURCES = ["fma", "magnatagatune", "musicbench", "musicqa", "jamendo", "song_describer"]
YOUTUBE_SOURCES = ["musiccaps", "audioset"]
LIBRARY_SOURCES = ["msd_lastfm", "folder", "allmusic", "spotify"]


def with_base(value, base: str):
    if isinstance(value, str):
        return value.replace("{base}", base)
    if isinstance(value, dict):
        return {k: with_base(v, base) for k, v in value.items()}
    return value


def run_source(name: str, root: Path, work: Path, shard_size: int = 3):
    """(fixture expectations, listed records, manifest rows, rejections, clip rows, summaries)."""
    fixture = importlib.import_module(f"tests.datasets.{name}").make_fixture(root)
    with serve(root) as (base, faults):
        options = {name: with_base(fixture["options"], base) | {"cache_dir": str(work / "cache"),
                                                                 "requests_per_second": 1000}}
        records_dir = str(work / "records")
        specs = plan([name], options, 10_000, shard_size, 0, records_dir)
        listed = [r for s in specs for r in read_records(storage.join(records_dir, s["records"]))]
        summaries, rows, rejected, clips = [], [], list(read_rejections(records_dir)), []
        for spec in specs:
            raw = str(work / f"raw{spec['shard']}")
            summaries.append(download_shard(json.loads(json.dumps(spec)), records_dir, raw, options))
            rows += list(storage.read_jsonl(storage.join(raw, layout.MANIFEST)))
            rejected += read_rejections(raw)
            out = str(work / f"clips{spec['shard']}")
            clip_shard(raw, out, ["native"], clip_seconds=10.0, max_clips_per_track=3)
            clips += storage.read_parquet(storage.join(out, layout.CLIPS)).to_pylist()
            rejected += read_rejections(out)
        # A second attempt at every shard fetches nothing: the files are there.
        requests_before = len(faults.log)
        again = [download_shard(spec, records_dir, str(work / f"raw{spec['shard']}"), options) for spec in specs]
        rerun_paths = [path for path, _, _ in faults.log[requests_before:]]
    close_all()
    return fixture, listed, rows, rejected, clips, summaries, again, rerun_paths


@pytest.mark.parametrize("name", ARCHIVE_SOURCES + YOUTUBE_SOURCES + LIBRARY_SOURCES)
def test_source_lists_downloads_and_clips(tmp_path, name):
    fixture, listed, rows, rejected, clips, summaries, again, rerun_paths = run_source(name, tmp_path / "site",
                                                                                 tmp_path / "work")
    expected = fixture["expected"]
    assert len(listed) == expected["records"]
    reasons = {r["item"]: r["reason"] for r in rejected}
    for item, reason in expected["audio_fail"].items():
        assert item in reasons and reason in reasons[item], (item, reasons.get(item))
    for item, reason in expected.get("rejected", {}).items():
        assert item in reasons and reason in reasons[item], (item, reasons.get(item))
    # A gone file fails at download, a corrupt one when the clip stage decodes it; every other
    # item becomes clips (none of the fixtures' audio is silent or too short).
    fetched = {r["track_id"] for r in rows}
    assert fetched >= {r.track_id for r in listed} - set(expected["audio_fail"])
    assert {c["track_id"] for c in clips} == {r.track_id for r in listed} - set(expected["audio_fail"])
    by_id = {r.track_id: r for r in listed}
    for clip in clips:
        record = by_id[clip["track_id"]]
        assert clip["split"] == record.split and clip["captions"] == record.captions
        if record.whole_track:
            assert clip["clip_id"].endswith("#0")
        elif record.clip_seconds:
            assert clip["end_s"] - clip["start_s"] <= record.clip_seconds + 1e-6
    # A re-run keeps every fetched item and asks the server only for the failed ones again.
    assert [s["resumed"] for s in again] == [s["tracks"] for s in summaries]
    failed_keys = [item.split("-", 1)[1] for item in expected["audio_fail"]]
    assert all(any(k in path for k in failed_keys) for path in rerun_paths), rerun_paths
