"""Listing (records -> shards) and the raw-shard layout written by download_shard."""

from __future__ import annotations

import io
import json

import pytest
import soundfile as sf

from musictext import layout, schema, storage
from musictext.ingest import base, registry
from musictext.ingest.download import check_shard_records, download_shard
from musictext.ingest.plan import merge_duplicates, plan, resolve_splits
from musictext.ingest.records import Record, YouTubeAudio, read_records
from musictext.ingest.registry import available, registered, validate_shard
from musictext.ingest.synthetic import source as synthetic_source
from musictext.ingest.synthetic.attributes import make_spec
from musictext.ingest.synthetic.captions import captions_for
from musictext.rejects import ItemError, read_rejections


def list_shards(sources, corpus, shard_size, seed, out):
    return plan(sources, {}, corpus, shard_size, seed, str(out))


@pytest.mark.parametrize("corpus,shard_size", [(40, 10), (41, 10), (7, 3), (5, 50), (1, 1)])
def test_listing_covers_the_corpus_exactly(tmp_path, corpus, shard_size):
    shards = list_shards(["synthetic"], corpus, shard_size, 3, tmp_path)
    assert json.loads(json.dumps(shards)) == shards
    assert [s["shard"] for s in shards] == list(range(len(shards)))
    assert all(s["num_shards"] == len(shards) and s["seed"] == 3 for s in shards)
    ids = [r.track_id for s in shards for r in read_records(str(tmp_path / s["records"]))]
    assert ids == [make_spec(3, i).track_id for i in range(corpus)]
    assert all(0 < s["size"] <= shard_size for s in shards)
    for s in shards:
        assert validate_shard(s) == s
        # KFP hands dict parameters back with float numbers.
        assert validate_shard({k: float(v) if isinstance(v, int) else v for k, v in s.items()}) == s
        assert check_shard_records(s, str(tmp_path))["records"] == s["size"]


@pytest.mark.parametrize("name", ["nope", "musicaps"])
def test_unknown_source_names_it_and_the_known_ones(tmp_path, name):
    with pytest.raises(ValueError, match=rf"unknown source '{name}'; known sources: \[.*'synthetic'"):
        list_shards(["synthetic", name], 10, 5, 0, tmp_path)


def test_registry_lists_the_builtin_sources_and_refuses_bad_ones():
    assert available() == sorted(s.name for s in registry.BUILTIN_SOURCES)
    assert all(isinstance(s, base.Source) for s in registry.BUILTIN_SOURCES)
    with pytest.raises(ValueError, match="already registered"), registered(synthetic_source.SyntheticSource()):
        pass
    with pytest.raises(TypeError, match="Source"), registered(object()):
        pass
    assert "synthetic" in available()


def test_a_source_must_implement_the_interface():
    class Incomplete(base.Source):
        name = "incomplete"

    with pytest.raises(TypeError, match="parse"):
        Incomplete()


@pytest.mark.parametrize("args", [([], 10, 5, 0), (["synthetic"], 0, 5, 0), (["synthetic"], 10, 0, 0),
                                  (["synthetic", "synthetic"], 10, 5, 0), (["synthetic"], 10, 5, -1)])
def test_listing_rejects_bad_arguments(tmp_path, args):
    with pytest.raises(ValueError):
        list_shards(*args, tmp_path)


def test_bad_options_fail_before_any_listing(tmp_path):
    with pytest.raises(ValueError, match=r"source 'synthetic': bad options: retries"):
        plan(["synthetic"], {"synthetic": {"retries": -1}}, 4, 4, 0, str(tmp_path))
    with pytest.raises(ValueError, match=r"bad options: no_such_option: Extra inputs"):
        plan(["synthetic"], {"synthetic": {"no_such_option": 1}}, 4, 4, 0, str(tmp_path))
    with pytest.raises(ValueError, match=r"not used: \['fma'\]"):
        plan(["synthetic"], {"fma": {}}, 4, 4, 0, str(tmp_path))


def test_bad_shard_spec_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        download_shard({"source": "synthetic", "shard": 0}, str(tmp_path), str(tmp_path / "raw"))
    spec = list_shards(["synthetic"], 4, 4, 0, tmp_path)[0]
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        download_shard(spec | {"source": "nope"}, str(tmp_path), str(tmp_path / "raw"))
    with pytest.raises(ValueError, match="size"):
        download_shard(spec | {"size": 2.5}, str(tmp_path), str(tmp_path / "raw"))
    with pytest.raises(ValueError, match="relative"):
        download_shard(spec | {"records": "../x.jsonl"}, str(tmp_path), str(tmp_path / "raw"))


def _record(track_id, source, split, group, captions, start=30.0, end=40.0):
    return Record(track_id=track_id, source=source, split=split, captions=captions, licence="CC-BY-4.0",
                  audio=YouTubeAudio(ytid=group[3:]), group=group, start_s=start, end_s=end)


def test_duplicates_across_sources_merge_and_groups_share_the_strictest_split():
    records = [
        _record("musiccaps-a", "musiccaps", "train", "yt:a", ["a calm piano"]),
        _record("audioset-a", "audioset", "train", "yt:a", ["Piano music.", "a calm piano"], 30.0, 40.0),
        _record("audioset-b", "audioset", "train", "yt:b", ["Rock."]),
        _record("musicbench-b", "musicbench", "test", "yt:b", ["loud rock"], 0.0, 10.0),  # other span
        _record("audioset-c", "audioset", "valid", "yt:c", ["Jazz."]),
    ]
    merged, count = merge_duplicates(records)
    assert count == 1 and [r.track_id for r in merged] == ["musiccaps-a", "audioset-b", "musicbench-b", "audioset-c"]
    assert merged[0].captions == ["a calm piano", "Piano music."]
    assert merged[0].meta["merged_from"] == ["audioset-a"]
    assert resolve_splits(merged) == 1
    assert [r.split for r in merged] == ["train", "test", "test", "valid"]  # yt:b is test everywhere


def _manifest(out_dir: str) -> list[dict]:
    return list(storage.read_jsonl(storage.join(out_dir, layout.MANIFEST)))


def test_download_shard_writes_the_raw_layout(tmp_path):
    shard = list_shards(["synthetic"], 5, 3, 0, tmp_path / "list")[1]  # indices 3 and 4
    out = str(tmp_path / "raw")
    summary = download_shard(shard, str(tmp_path / "list"), out)
    assert summary["tracks"] == 2 and summary["rejected"] == 0
    rows = _manifest(out)
    assert [r["track_id"] for r in rows] == ["synthetic-s0-000003", "synthetic-s0-000004"]
    for row in rows:
        assert set(schema.TRACK_FIELDS) <= set(row) and "audio" not in row
        assert row["group"] == f"synthetic:{row['track_id']}" and row["start_s"] is None
        spec = make_spec(0, int(row["track_id"][-6:]))
        assert row["split"] == spec.split and row["captions"] == captions_for(spec)
        assert row["licence"] == synthetic_source.LICENCE and row["source"] == "synthetic"
        info = sf.info(str(tmp_path / "raw" / row["path"]))
        assert (info.samplerate, info.channels) == (44100, 2) and info.frames == round(spec.duration_s * 44100)
    assert read_rejections(out) == []
    assert (tmp_path / "raw" / layout.REJECTED).exists()


def test_download_is_deterministic_and_works_on_fsspec_uris(tmp_path):
    shard = list_shards(["synthetic"], 1, 1, 5, tmp_path / "list")[0]
    local, remote = str(tmp_path / "a"), "memory://musictext-test/raw"
    download_shard(shard, str(tmp_path / "list"), local)
    download_shard(shard, str(tmp_path / "list"), remote)
    assert _manifest(local) == _manifest(remote)
    rel = _manifest(local)[0]["path"]
    assert storage.read_bytes(storage.join(local, rel)) == storage.read_bytes(storage.join(remote, rel))
    audio, _ = sf.read(io.BytesIO(storage.read_bytes(storage.join(remote, rel))))
    assert abs(audio).max() > 1e-3


def test_a_failing_render_is_rejected_and_the_rest_kept(tmp_path, monkeypatch):
    real_render = synthetic_source.render

    def flaky(spec, *args):
        if spec.index == 1:
            raise ItemError(spec.track_id, "simulated fluidsynth crash")
        if spec.index == 2:
            raise OSError("disk hiccup")
        return real_render(spec, *args)

    monkeypatch.setattr(synthetic_source, "render", flaky)
    out = str(tmp_path / "raw")
    summary = download_shard(list_shards(["synthetic"], 4, 4, 0, tmp_path / "list")[0], str(tmp_path / "list"), out)
    assert summary["tracks"] == 2 and summary["rejected"] == 2
    assert [r["track_id"] for r in _manifest(out)] == ["synthetic-s0-000000", "synthetic-s0-000003"]
    rejected = {r["item"]: r["reason"] for r in read_rejections(out)}
    assert rejected["synthetic-s0-000001"] == "simulated fluidsynth crash"
    assert "render failed: OSError: disk hiccup" == rejected["synthetic-s0-000002"]
    assert not (tmp_path / "raw" / "audio" / "synthetic-s0-000001.wav").exists()




def test_a_rerun_skips_fetched_items(tmp_path, monkeypatch):
    shard = list_shards(["synthetic"], 3, 3, 0, tmp_path / "list")[0]
    out = str(tmp_path / "raw")
    first = download_shard(shard, str(tmp_path / "list"), out)
    rows = _manifest(out)

    def no_render(*args):
        raise AssertionError("a fetched item was rendered again")

    monkeypatch.setattr(synthetic_source, "render", no_render)
    again = download_shard(shard, str(tmp_path / "list"), out)
    assert (first["resumed"], again["resumed"], again["tracks"]) == (0, 3, 3)
    assert _manifest(out) == rows
