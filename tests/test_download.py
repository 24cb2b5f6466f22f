"""Shard planning and the raw-shard layout written by download_shard."""

from __future__ import annotations

import io
import json

import pytest
import soundfile as sf

from musictext import layout, schema, storage
from musictext.ingest import synthetic
from musictext.ingest.download import download_shard
from musictext.ingest.registry import available, list_shards, validate_shard
from musictext.rejects import ItemError, read_rejections


@pytest.mark.parametrize("corpus,shard_size", [(400, 100), (401, 100), (7, 3), (5, 50), (1, 1)])
def test_list_shards_cover_the_corpus_exactly(corpus, shard_size):
    shards = list_shards(["synthetic"], corpus, shard_size, seed=3)
    assert json.loads(json.dumps(shards)) == shards
    assert [s["shard"] for s in shards] == list(range(len(shards)))
    assert all(s["num_shards"] == len(shards) and s["seed"] == 3 for s in shards)
    covered = [i for s in shards for i in range(s["start"], s["start"] + s["size"])]
    assert covered == list(range(corpus))
    assert all(0 < s["size"] <= shard_size for s in shards)
    for s in shards:
        assert validate_shard(s) == s
        # KFP hands dict parameters back with float numbers.
        assert validate_shard({k: float(v) if isinstance(v, int) else v for k, v in s.items()}) == s


@pytest.mark.parametrize("name", ["nope", "musiccaps"])
def test_unknown_source_names_it_and_the_available_ones(name):
    with pytest.raises(ValueError, match=rf"{name}.*synthetic"):
        list_shards(["synthetic", name], 10, 5, 0)
    assert available() == ["synthetic"]


@pytest.mark.parametrize("args", [([], 10, 5, 0), (["synthetic"], 0, 5, 0), (["synthetic"], 10, 0, 0),
                                  (["synthetic", "synthetic"], 10, 5, 0), (["synthetic"], 10, 5, -1)])
def test_list_shards_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        list_shards(*args)


def test_bad_shard_spec_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        download_shard({"source": "synthetic", "shard": 0}, str(tmp_path))
    spec = list_shards(["synthetic"], 4, 4, 0)[0] | {"source": "fma"}
    with pytest.raises(ValueError, match="fma"):
        download_shard(spec, str(tmp_path))
    with pytest.raises(ValueError, match="size"):
        download_shard(spec | {"source": "synthetic", "size": 2.5}, str(tmp_path))


def _manifest(out_dir: str) -> list[dict]:
    return list(storage.read_jsonl(storage.join(out_dir, layout.MANIFEST)))


def test_download_shard_writes_the_raw_layout(tmp_path):
    shard = list_shards(["synthetic"], 5, 3, seed=0)[1]  # indices 3 and 4
    out = str(tmp_path / "raw")
    summary = download_shard(shard, out)
    assert summary["tracks"] == 2 and summary["rejected"] == 0
    rows = _manifest(out)
    assert [r["track_id"] for r in rows] == ["synthetic-s0-000003", "synthetic-s0-000004"]
    for row in rows:
        assert tuple(row) == schema.TRACK_FIELDS
        spec = synthetic.make_spec(0, int(row["track_id"][-6:]))
        assert row["split"] == spec.split and row["captions"] == synthetic.captions_for(spec)
        assert row["licence"] == synthetic.LICENCE and row["source"] == "synthetic"
        info = sf.info(str(tmp_path / "raw" / row["path"]))
        assert info.samplerate == 44100 and info.frames == round(spec.duration_s * 44100)
    assert read_rejections(out) == []
    assert (tmp_path / "raw" / layout.REJECTED).exists()


def test_download_is_deterministic_and_works_on_fsspec_uris(tmp_path):
    shard = list_shards(["synthetic"], 1, 1, seed=5)[0]
    local, remote = str(tmp_path / "a"), "memory://musictext-test/raw"
    download_shard(shard, local)
    download_shard(shard, remote)
    assert _manifest(local) == _manifest(remote)
    rel = _manifest(local)[0]["path"]
    assert storage.read_bytes(storage.join(local, rel)) == storage.read_bytes(storage.join(remote, rel))
    audio, _ = sf.read(io.BytesIO(storage.read_bytes(storage.join(remote, rel))))
    assert abs(audio).max() > 1e-3


def test_a_failing_render_is_rejected_and_the_rest_kept(tmp_path, monkeypatch):
    real_render = synthetic.render

    def flaky(spec, *args):
        if spec.index == 1:
            raise ItemError(spec.track_id, "simulated fluidsynth crash")
        if spec.index == 2:
            raise OSError("disk hiccup")
        return real_render(spec, *args)

    monkeypatch.setattr(synthetic, "render", flaky)
    out = str(tmp_path / "raw")
    summary = download_shard(list_shards(["synthetic"], 4, 4, seed=0)[0], out)
    assert summary["tracks"] == 2 and summary["rejected"] == 2
    assert [r["track_id"] for r in _manifest(out)] == ["synthetic-s0-000000", "synthetic-s0-000003"]
    rejected = {r["item"]: r["reason"] for r in read_rejections(out)}
    assert rejected["synthetic-s0-000001"] == "simulated fluidsynth crash"
    assert "disk hiccup" in rejected["synthetic-s0-000002"]
    assert not (tmp_path / "raw" / "audio" / "synthetic-s0-000001.wav").exists()
