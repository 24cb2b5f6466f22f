"""Real gs:// round trips through gcsfs against a local storage emulator (loopback only).

The library builds its GCSFileSystem with defaults (``url_to_fs``); the emulator is reached
purely by configuration: ``STORAGE_EMULATOR_HOST`` plus fsspec's per-protocol default kwargs
(``fsspec.config.conf["gs"]``, the same dict that ``FSSPEC_GS_*`` variables fill at import).
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` is set in tests/conftest.py, before any import.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from tests.http_server import stop_process

BUCKET = "musictext-test"
EMULATOR = Path(sys.executable).parent / "gcp-storage-emulator"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(proc: subprocess.Popen, port: int, deadline_s: float = 20.0) -> None:
    url = f"http://127.0.0.1:{port}/storage/v1/b?project=test"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"storage emulator exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"storage emulator on 127.0.0.1:{port} did not answer in {deadline_s} s")


@pytest.fixture(scope="session")
def gcs():
    """A started emulator with one bucket; yields the gcsfs filesystem musictext.storage uses."""
    if not EMULATOR.exists():
        pytest.skip(f"{EMULATOR} not installed")
    assert os.environ.get("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT") == "false"  # tests/conftest.py
    import fsspec
    import gcsfs
    import gcsfs.retry

    # The experimental class would stall each call on a gRPC probe; conftest.py must win.
    assert gcsfs.GCSFileSystem is gcsfs.core.GCSFileSystem

    port = _free_port()
    proc = subprocess.Popen(
        [str(EMULATOR), "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mp = pytest.MonkeyPatch()
    try:
        _wait_until_up(proc, port)
        mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        # Default kwargs for every gs:// filesystem fsspec builds (url_to_fs included).
        mp.setitem(
            fsspec.config.conf, "gs", {"token": "anon", "project": "test", "use_listings_cache": False}
        )
        # The emulator answers gcsfs's moveTo call with 501 Not Implemented, which gcsfs retries
        # with back-off (~30 s) before its own copy+delete fallback. Fail that one call at once
        # so the fallback runs straight away; nothing else about retries changes.
        orig = gcsfs.retry.is_retriable

        def is_retriable(err):
            if isinstance(err, gcsfs.retry.HttpError) and err.code == 501:
                return False
            return orig(err)

        mp.setattr(gcsfs.retry, "is_retriable", is_retriable)
        gcsfs.GCSFileSystem.clear_instance_cache()

        from musictext import storage

        fs, _ = storage.fs_for(f"gs://{BUCKET}/x")
        assert isinstance(fs, gcsfs.core.GCSFileSystem) and fs.storage_options["token"] == "anon"
        fs.mkdir(BUCKET)
        yield fs
    finally:
        mp.undo()
        import gcsfs as _g

        _g.GCSFileSystem.clear_instance_cache()
        stop_process(proc, 10)


def uri(*parts: str) -> str:
    return "gs://" + "/".join([BUCKET, *parts])


# ----------------------------------------------------------------- storage helpers
def test_storage_helpers_round_trip(gcs):
    from musictext import storage

    table = pa.table({"clip_id": ["a#0", "b#0"], "x": [1.5, -2.0]})
    storage.write_parquet(uri("helpers", "t.parquet"), table)
    assert storage.read_parquet(uri("helpers", "t.parquet")).equals(table)
    assert storage.read_parquet(uri("helpers", "t.parquet"), columns=["x"]).column_names == ["x"]

    storage.write_json(uri("helpers", "deep", "m.json"), {"n": 2, "k": [1, 2]})
    assert storage.read_json(uri("helpers", "deep", "m.json")) == {"n": 2, "k": [1, 2]}
    rows = [{"item": "a", "reason": "r1"}, {"item": "b", "reason": "r2"}]
    storage.write_jsonl(uri("helpers", "r.jsonl"), rows)
    assert list(storage.read_jsonl(uri("helpers", "r.jsonl"))) == rows
    # Overwriting an existing object through the atomic write replaces it.
    storage.write_json(uri("helpers", "deep", "m.json"), {"n": 3})
    assert storage.read_json(uri("helpers", "deep", "m.json")) == {"n": 3}

    assert storage.exists(uri("helpers", "t.parquet"))
    assert storage.exists(uri("helpers", "deep"))  # a "directory" prefix
    assert not storage.exists(uri("helpers", "nope.json"))
    names = sorted(p.split(f"{BUCKET}/helpers/", 1)[1] for p in gcs.find(f"{BUCKET}/helpers"))
    assert names == ["deep/m.json", "r.jsonl", "t.parquet"]  # no .tmp- leftovers
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(uri("helpers", "nope.json"))


# ----------------------------------------------------------------- MERT from a bucket
def _mert_cfg():
    from musictext.config import load_family_config

    over = {"audio": {"window_s": 1, "hop_s": 0.5, "batch_windows": 3}}
    return load_family_config("mert", "demo", over).audio


def test_mert_loads_from_a_bucket(gcs, tmp_path, monkeypatch):
    from musictext import hub
    from musictext.audio import build_embedder
    from tests.audio_fixtures import tone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MUSICTEXT_CACHE", str(tmp_path / "cache"))
    cfg = _mert_cfg()
    built = build_embedder(cfg, device="cpu")  # the seeded random HubertModel
    saved = tmp_path / "mert-local"
    built.adapter.loaded.model.save_pretrained(saved)
    built.adapter.loaded.processor.save_pretrained(saved)
    gcs.put(str(saved), f"{BUCKET}/models/mert", recursive=True)
    remote = uri("models", "mert")

    loaded_cfg = cfg.model_copy(update={"random_init": False, "model": remote})
    from_bucket = build_embedder(loaded_cfg, device="cpu")
    from_dir = build_embedder(cfg.model_copy(update={"random_init": False, "model": str(saved)}), device="cpu")
    x = torch.from_numpy(tone(220, cfg.sample_rate, 1.7))
    got = from_bucket.embed_audio_tensor(x, cfg.sample_rate)
    assert from_bucket.target_dim == cfg.target_dim == 3 * (cfg.num_hidden_layers + 1) * cfg.hidden_size
    assert got.shape == (cfg.target_dim,) and bool(torch.isfinite(got).all())
    assert torch.equal(got, from_dir.embed_audio_tensor(x, cfg.sample_rate))

    # The mirror holds exactly the saved files, and a second resolve never touches the bucket.
    local = hub.mirror_remote(remote)
    key = hashlib.sha256(remote.encode()).hexdigest()[:16]
    assert local == tmp_path / "cache" / "mirror" / key / "mert"  # keeps the bucket directory's name
    assert (local.parent / ".complete").read_text() == "mert"
    assert sorted(p.name for p in local.iterdir() if p.name != ".complete") == sorted(
        p.name for p in saved.iterdir()
    )

    def no_bucket(*a, **k):
        raise AssertionError("the mirrored model was fetched again")

    with monkeypatch.context() as mp:
        mp.setattr(hub.storage, "fs_for", no_bucket)
        assert hub.resolve_pretrained(remote) == str(local)

    missing = uri("models", "no-such-model")
    with pytest.raises(FileNotFoundError, match=missing):
        hub.resolve_pretrained(missing)
    with pytest.raises(FileNotFoundError, match=missing):
        build_embedder(cfg.model_copy(update={"random_init": False, "model": missing}), device="cpu")


# ----------------------------------------------------------------- Music2Latent checkpoint
def test_music2latent_checkpoint_from_a_bucket(gcs, tmp_path, monkeypatch):
    import music2latent.inference as m2l_inference
    from music2latent.models import UNet

    from musictext.audio import build_embedder
    from musictext.audio.families.music2latent import m2l_checkpoint_path, save_music2latent_checkpoint
    from musictext.config import load_family_config
    from tests.audio_fixtures import tone

    def no_download():
        raise AssertionError("music2latent tried to download its checkpoint")

    monkeypatch.setattr(m2l_inference, "download_model", no_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MUSICTEXT_CACHE", str(tmp_path / "cache"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gen = UNet()
    local_dir = tmp_path / "m2l"
    ckpt = save_music2latent_checkpoint(gen, local_dir)
    gcs.put(ckpt, f"{BUCKET}/models/m2l/music2latent.pt")

    # A directory URI and a file URI both resolve to a byte-identical local copy.
    for ref in (uri("models", "m2l"), uri("models", "m2l", "music2latent.pt")):
        path = m2l_checkpoint_path(ref)
        assert path.startswith(str(tmp_path / "cache")) and Path(path).name == "music2latent.pt"
        assert Path(path).stat().st_size == Path(ckpt).stat().st_size
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        m2l_checkpoint_path(uri("models", "no-such-dir"))

    def embedder(model):
        cfg = load_family_config("music2latent", "production", {"audio": {"model": model}}).audio
        return build_embedder(cfg, device="cpu")

    from_bucket = embedder(uri("models", "m2l"))
    state = from_bucket.adapter.loaded.model.gen.state_dict()
    assert all(torch.equal(state[k], v) for k, v in gen.state_dict().items())
    x = torch.from_numpy(tone(220, 44100, 0.2))  # one latent frame: cheap on CPU
    got = from_bucket.embed_audio_tensor(x, 44100)
    assert got.shape == (576,)
    assert torch.equal(got, embedder(str(local_dir)).embed_audio_tensor(x, 44100))


# ----------------------------------------------------------------- targets in a bucket
def _clip_shard(path):
    from tests.audio_fixtures import make_clip_shard, tone

    clips = [
        {"clip_id": f"g{i}#0", "split": "test" if i % 2 else "train",
         "audio": {44100: tone(180 * (i + 1), 44100, 2.0)}}
        for i in range(4)
    ]
    clips.append({"clip_id": "gbad#0", "audio": {44100: b"not audio"}})
    return make_clip_shard(path, clips)


def test_targets_embedded_gathered_and_read_from_a_bucket(gcs, tmp_path):
    from musictext import layout, storage
    from musictext.embed.targets import embed_clips, embed_shard
    from musictext.config import load_family_config
    from musictext.embed.index import gather_targets, write_index
    from musictext.layout import index_shards, target_files
    from tests.toy import read_targets

    local_shard = _clip_shard(tmp_path / "clips0")
    gcs.put(str(local_shard), f"{BUCKET}/clips0", recursive=True)
    clips, targets = uri("clips0"), uri("targets0")
    assert storage.exists(storage.join(clips, layout.CLIPS))

    summary = embed_shard(clips, targets, ["music2latent"], "demo")
    assert summary == {"music2latent_targets": 4, "music2latent_rejected": 1}
    local_out = tmp_path / "targets0"
    assert embed_shard(str(local_shard), str(local_out), ["music2latent"], "demo") == summary

    fam = storage.join(targets, "music2latent")
    listed = sorted(p.rsplit("/", 1)[1] for p in gcs.ls(fam.split("://", 1)[1]))
    assert listed == sorted([layout.META, layout.REJECTED, layout.TARGETS])  # no .tmp- objects
    rejected = list(storage.read_jsonl(storage.join(fam, layout.REJECTED)))
    assert [r["item"] for r in rejected] == ["gbad#0"]
    # Idempotent on a bucket too: the complete output is recognised and skipped.
    cfg = load_family_config("music2latent", "demo")
    again = embed_clips([clips], fam, cfg)
    assert again["skipped"] is True and again["n"] == 4

    index = uri("index")
    assert write_index([clips], index, [targets]) == {"shards": 1, "target_shards": 1, "clips": 5, "rejected": 0,
                                                      "dropped": 0}
    assert index_shards(index) == [clips]
    gathered = uri("gathered", "music2latent")
    out = gather_targets(index, "music2latent", gathered)
    assert out == {"family": "music2latent", "targets": 4, "shards": 1, "rejected": 1}
    assert target_files(gathered) == [storage.join(fam, layout.TARGETS)]
    assert storage.read_json(storage.join(gathered, layout.META))["n_rejected"] == 1

    for split, want_ids in (("train", ["g0#0", "g2#0"]), ("test", ["g1#0", "g3#0"])):
        ids, vals = read_targets(gathered, split)
        local_ids, local_vals = read_targets(str(local_out / "music2latent"), split)
        assert ids == local_ids == want_ids
        assert vals.shape == (2, cfg.audio.target_dim) and vals.dtype == np.float32
        assert np.array_equal(vals, local_vals)
        assert np.abs(vals).sum() > 0
