"""Per-shard audio embedding, the shard index, and one family's gathered targets."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from musictext import layout, storage
from musictext.embed.targets import embed_shard
from musictext.config import load_family_config
from musictext.embed.index import gather_targets, write_index
from musictext.layout import index_shards, target_files
from tests.toy import read_targets
from tests.audio_fixtures import make_clip_shard, renderings_of, tone

FAMILIES = ["muq", "music2latent"]


def clip_shard(path, prefix: str, n: int, bad: bool = False):
    """Clips of 48 kHz stereo sources, in both renderings (native for MuQ, stereo44k for Music2Latent)."""
    clips = []
    for i in range(n):
        source = np.stack([tone(220 * (i + 1), 48000, 3.0), tone(330 * (i + 1), 48000, 3.0, amp=0.2)], axis=1)
        clips.append({"clip_id": f"{prefix}{i}#0", "split": "test" if i % 2 else "train",
                      "audio": renderings_of(source, 48000)})
    if bad:  # undecodable bytes in every rendering: quarantined, the rest of the shard kept
        clips.append({"clip_id": f"{prefix}bad#0", "audio": renderings_of(b"not audio", 48000)})
    return make_clip_shard(path, clips)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    shards = [clip_shard(root / "clips0", "a", 3, bad=True), clip_shard(root / "clips1", "b", 2)]
    targets = []
    for k, shard in enumerate(shards):
        out = root / f"targets{k}"
        summary = embed_shard(str(shard), str(out), FAMILIES, "demo")
        targets.append((out, summary))
    index = root / "index"
    write_index([str(s) for s in shards], str(index), [str(t) for t, _ in targets])
    return root, shards, targets, index


def test_embed_shard_writes_each_family(embedded):
    _, _, targets, _ = embedded
    (out0, summary0), (_, summary1) = targets
    assert summary0 == {"muq_targets": 3, "muq_rejected": 1, "music2latent_targets": 3, "music2latent_rejected": 1}
    assert summary1["muq_targets"] == 2
    for family in FAMILIES:
        table = pq.read_table(out0 / family / layout.TARGETS)
        dim = load_family_config(family, "demo").audio.target_dim
        assert table.schema.field("target").type.list_size == dim
    # Each family's meta.json records the clip file its targets come from.
    assert storage.read_json(str(out0 / "muq" / layout.META))["clip_rendering"] == "mono24k"
    meta = storage.read_json(str(out0 / "music2latent" / layout.META))
    assert meta["clip_rendering"] == "stereo44k" and meta["m2l_native_rate"] is False


def test_embed_shard_is_idempotent(embedded):
    _, shards, targets, _ = embedded
    out0, _ = targets[0]
    before = (out0 / "muq" / layout.TARGETS).stat().st_mtime_ns
    embed_shard(str(shards[0]), str(out0), ["muq"], "demo")
    assert (out0 / "muq" / layout.TARGETS).stat().st_mtime_ns == before  # skipped, not rewritten


def test_gather_lists_shards_without_copying(embedded, tmp_path):
    _, _, targets, index = embedded
    out = tmp_path / "muq_targets"
    summary = gather_targets(str(index), "muq", str(out))
    assert summary == {"family": "muq", "targets": 5, "shards": 2, "rejected": 1}
    assert target_files(str(out)) == [str(t / "muq" / layout.TARGETS) for t, _ in targets]
    assert not (out / layout.TARGETS).exists()
    meta = storage.read_json(str(out / layout.META))
    assert meta["target_dim"] == load_family_config("muq", "demo").audio.target_dim and meta["n"] == 5
    rejected = list(storage.read_jsonl(str(out / layout.REJECTED)))
    assert [r["item"] for r in rejected] == ["abad#0"]
    # Training reads the gathered shards as one split table.
    ids, vecs = read_targets(str(out), "test")
    assert sorted(ids) == ["a1#0", "b1#0"]
    assert vecs.shape == (2, meta["target_dim"])
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_gather_names_an_unfinished_shard(embedded, tmp_path):
    root, shards, targets, _ = embedded
    index = tmp_path / "index"
    write_index([str(s) for s in shards], str(index), [str(targets[0][0]), str(root / "never-ran")])
    with pytest.raises(FileNotFoundError, match="never-ran"):
        gather_targets(str(index), "muq", str(tmp_path / "out"))
    assert index_shards(str(index)) == [str(s) for s in shards]


def test_a_clip_in_two_shards_is_kept_once_in_targets_and_text(embedded, tmp_path):
    """Merge drops the later copy (recorded once, with both shards); the gathered targets and
    the text leave it out alike, so each split holds every clip id once."""
    from musictext.config import TextConfig
    from musictext.text.prepare import prepare_text

    _, shards, targets, _ = embedded
    dup = clip_shard(tmp_path / "dup", "a", 2)  # a0#0 and a1#0 again, as in shards[0]
    dup_targets = tmp_path / "dup_targets"
    embed_shard(str(dup), str(dup_targets), ["muq"], "demo")
    index = tmp_path / "index"
    summary = write_index([str(shards[0]), str(dup), str(shards[1])], str(index),
                          [str(targets[0][0]), str(dup_targets), str(targets[1][0])])
    assert summary["clips"] == 6 and summary["dropped"] == 2  # abad#0 too: its row is fine, its audio not
    listed = layout.read_index(str(index))
    assert listed["dropped"] == {str(dup): ["a0#0", "a1#0"]}
    merged = [r for r in listed["rejected"] if r["stage"] == "merge_shards"]
    assert [r["item"] for r in merged] == ["a0#0", "a1#0"]
    assert f"dropped from {dup}, kept in {shards[0]}" in merged[0]["reason"]

    out = tmp_path / "muq_targets"
    assert gather_targets(str(index), "muq", str(out))["targets"] == 5
    files = target_files(str(out))
    assert files[0] == str(targets[0][0] / "muq" / layout.TARGETS)  # untouched shards are read in place
    assert files[1].startswith(str(out)) and pq.read_table(files[1]).num_rows == 0
    ids = [i for split in ("train", "test") for i in read_targets(str(out), split)[0]]
    assert sorted(ids) == ["a0#0", "a1#0", "a2#0", "b0#0", "b1#0"]

    text = tmp_path / "text"
    got = prepare_text(listed["shards"], str(text), TextConfig(), dropped=listed["dropped"])
    assert got["clips"] == 6 and got["rejected"] == 0  # the duplicate is recorded once, by the merge
    text_ids = storage.read_parquet(str(text / layout.TEXT)).column("clip_id").to_pylist()
    assert sorted(text_ids) == sorted([*ids, "abad#0"])
