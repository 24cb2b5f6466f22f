"""Shard planning and the raw-shard layout written by download_shard."""

from __future__ import annotations

import csv
import io
import json

import pytest
import soundfile as sf

from musictext import layout, schema, storage
from musictext.ingest import base, registry
from musictext.ingest.download import download_shard
from musictext.ingest.registry import available, list_shards, registered, validate_shard
from musictext.ingest.synthetic import source as synthetic_source
from musictext.ingest.synthetic.attributes import make_spec
from musictext.ingest.synthetic.captions import captions_for
from musictext.ingest.template import LocalFolderSource
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
def test_unknown_source_names_it_and_the_known_ones(name):
    with pytest.raises(ValueError, match=rf"unknown source '{name}'; known sources: \['synthetic'\]"):
        list_shards(["synthetic", name], 10, 5, 0)
    assert available() == ["synthetic"]


def test_registry_lists_the_builtin_sources_and_refuses_bad_ones(tmp_path):
    assert available() == sorted(s.name for s in registry.BUILTIN_SOURCES)
    assert all(isinstance(s, base.Source) for s in registry.BUILTIN_SOURCES)
    duplicate = LocalFolderSource(str(tmp_path / "x.csv"), name="synthetic")
    with pytest.raises(ValueError, match="already registered"), registered(duplicate):
        pass
    with pytest.raises(TypeError, match="Source"), registered(object()):
        pass
    assert available() == ["synthetic"]


def test_a_source_must_implement_the_interface():
    class Incomplete(base.Source):
        name = "incomplete"

        def plan_shards(self, corpus_size, shard_size, seed):
            return base.even_shards(self.name, corpus_size, shard_size, seed)

    with pytest.raises(TypeError, match="download_shard"):
        Incomplete()


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
        spec = make_spec(0, int(row["track_id"][-6:]))
        assert row["split"] == spec.split and row["captions"] == captions_for(spec)
        assert row["licence"] == synthetic_source.LICENCE and row["source"] == "synthetic"
        info = sf.info(str(tmp_path / "raw" / row["path"]))
        assert (info.samplerate, info.channels) == (44100, 2) and info.frames == round(spec.duration_s * 44100)
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
    real_render = synthetic_source.render

    def flaky(spec, *args):
        if spec.index == 1:
            raise ItemError(spec.track_id, "simulated fluidsynth crash")
        if spec.index == 2:
            raise OSError("disk hiccup")
        return real_render(spec, *args)

    monkeypatch.setattr(synthetic_source, "render", flaky)
    out = str(tmp_path / "raw")
    summary = download_shard(list_shards(["synthetic"], 4, 4, seed=0)[0], out)
    assert summary["tracks"] == 2 and summary["rejected"] == 2
    assert [r["track_id"] for r in _manifest(out)] == ["synthetic-s0-000000", "synthetic-s0-000003"]
    rejected = {r["item"]: r["reason"] for r in read_rejections(out)}
    assert rejected["synthetic-s0-000001"] == "simulated fluidsynth crash"
    assert "disk hiccup" in rejected["synthetic-s0-000002"]
    assert not (tmp_path / "raw" / "audio" / "synthetic-s0-000001.wav").exists()


# ----------------------------------------------------------------------------- template source

_LISTING = [
    ("track_id", "path", "split", "caption", "licence"),
    ("a001", "audio/a001.wav", "train", "slow sad piano, with rain", "CC-BY-4.0"),
    ("a002", "audio/a002.WAV", "test", "fast bright brass", "CC0-1.0"),
    ("../evil", "audio/a001.wav", "train", "escapes the shard dir", "CC0-1.0"),
    ("a004", "audio/missing.wav", "valid", "its file is gone", "CC0-1.0"),
    ("a005", "audio/a005.wav", "holdout", "not a split", "CC0-1.0"),
    ("a006", "audio/a006.flac", "valid", "two lines\nof caption", "CC-BY-4.0"),
]


def _write_listing(folder) -> str:
    (folder / "audio").mkdir(parents=True)
    for name in ("a001.wav", "a002.WAV", "a005.wav", "a006.flac"):
        (folder / "audio" / name).write_bytes(f"audio bytes of {name}".encode())
    listing = folder / "listing.csv"
    with open(listing, "w", newline="") as fh:  # CRLF rows, a quoted line break in a caption
        csv.writer(fh, lineterminator="\r\n").writerows(_LISTING)
    return str(listing)


def _as_kfp_passes_it(spec: dict) -> dict:
    return json.loads(json.dumps({k: float(v) if isinstance(v, int) else v for k, v in spec.items()}))


def test_template_source_round_trip(tmp_path):
    source = LocalFolderSource(_write_listing(tmp_path / "data"))
    with registered(source):
        assert source.name in available()
        shards = list_shards([source.name], corpus_size=100, shard_size=4, seed=0)
        assert [(s["start"], s["size"]) for s in shards] == [(0, 4), (4, 2)]
        assert [(s["start"], s["size"]) for s in list_shards([source.name], 3, 2, 0)] == [(0, 2), (2, 1)]
        outs = [str(tmp_path / f"raw{s['shard']}") for s in shards]
        summaries = [download_shard(_as_kfp_passes_it(s), out) for s, out in zip(shards, outs)]
    assert source.name not in available()

    assert [(s["tracks"], s["rejected"]) for s in summaries] == [(2, 2), (1, 1)]
    rows = [row for out in outs for row in _manifest(out)]
    prefix = "local-folder-template-"
    assert [r["track_id"] for r in rows] == [prefix + "a001", prefix + "a002", prefix + "a006"]
    assert all(tuple(r) == schema.TRACK_FIELDS and r["source"] == source.name for r in rows)
    assert [r["split"] for r in rows] == ["train", "test", "valid"]
    assert rows[0]["captions"] == ["slow sad piano, with rain"]
    assert rows[2]["captions"] == ["two lines\nof caption"] and rows[2]["licence"] == "CC-BY-4.0"
    assert [r["path"] for r in rows] == [f"audio/{prefix}a001.wav", f"audio/{prefix}a002.wav",
                                         f"audio/{prefix}a006.flac"]
    assert (tmp_path / "raw0" / rows[0]["path"]).read_bytes() == b"audio bytes of a001.wav"
    rejected = {r["item"]: r["reason"] for out in outs for r in read_rejections(out)}
    assert set(rejected) == {"../evil", prefix + "a004", prefix + "a005"}
    assert "unsafe" in rejected["../evil"] and "not found" in rejected[prefix + "a004"]
    assert "holdout" in rejected[prefix + "a005"]
    assert not any("evil" in p.name for p in tmp_path.rglob("*"))


def test_template_source_resumes_without_refetching(tmp_path):
    source = LocalFolderSource(_write_listing(tmp_path / "data"))
    with registered(source):
        shard = list_shards([source.name], 2, 2, seed=0)[0]
        out = str(tmp_path / "raw")
        download_shard(shard, out)
        first = _manifest(out)
        # An interrupted attempt left a001's file; its source is gone, so only a resume keeps it.
        (tmp_path / "data" / "audio" / "a001.wav").unlink()
        assert download_shard(shard, out)["rejected"] == 0 and _manifest(out) == first
        summary = download_shard(shard, str(tmp_path / "fresh"))
    assert summary["tracks"] == 1 and summary["rejected"] == 1


def test_template_listing_without_a_column_fails_planning(tmp_path):
    listing = tmp_path / "listing.csv"
    listing.write_text("track_id,path,split,caption\na,a.wav,train,x\n")
    source = LocalFolderSource(str(listing))
    with registered(source), pytest.raises(ValueError, match=r"lacks columns \['licence'\]"):
        list_shards([source.name], 10, 5, 0)
