"""The data components run through kfp.local as they would in pods.

kfp.local runs a component alone only when it has no input artifacts, so the artifact-passing
components are chained in a small pipeline of their own.
"""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp import dsl
from kfp.dsl import Dataset

from musictext import layout, schema
from musictext_kfp.components.clip import clip
from musictext_kfp.components.download import download
from musictext_kfp.components.embed_audio import embed_audio
from musictext_kfp.components.gather_targets import gather_targets
from musictext_kfp.components.list_sources import list_sources
from musictext_kfp.components.merge_shards import merge_shards


@dsl.pipeline
def data_stages(corpus_size: int, shard_size: int, m2l_native_rate: bool = False) -> Dataset:
    plan = list_sources(sources=["synthetic"], source_options={}, folder="", corpus_size=corpus_size,
                        shard_size=shard_size, seed=3)
    with dsl.ParallelFor(plan.outputs["Output"]) as shard:
        raw = download(shard=shard, records=plan.outputs["records"])
        clipped = clip(
            raw=raw.outputs["raw"], families=["muq", "music2latent"], profile="demo",
            clip_seconds=4.0, max_clips_per_track=1, clip_format="flac", m2l_native_rate=m2l_native_rate,
        )
        embedded = embed_audio(clips=clipped.outputs["clips"], families=["music2latent"], profile="demo",
                               m2l_native_rate=m2l_native_rate)
    index = merge_shards(
        shards=dsl.Collected(clipped.outputs["clips"]),
        targets=dsl.Collected(embedded.outputs["targets"]),
        raws=dsl.Collected(raw.outputs["raw"]),
        listing=plan.outputs["records"],
    )
    return gather_targets(family="music2latent", index=index.outputs["index"]).outputs["targets"]


def latest_index(root) -> Path:
    """The shard index of the newest data_stages run under the pipeline root."""
    return max(Path(root).glob("data-stages-*/merge-shards/index"), key=lambda p: p.stat().st_mtime)


def test_list_sources_plans_shards(kfp_local):
    task = list_sources(sources=["synthetic"], source_options={}, folder="", corpus_size=6, shard_size=4, seed=3)
    specs = task.outputs["Output"]
    assert [int(s["size"]) for s in specs] == [4, 2]
    stats = Path(task.outputs["stats"].path).read_text()
    assert "| synthetic | 6 |" in stats
    assert {s["source"] for s in specs} == {"synthetic"}


def test_unknown_source_fails_the_task(kfp_local):
    with pytest.raises(RuntimeError):
        list_sources(sources=["no-such-source"], source_options={}, folder="", corpus_size=6, shard_size=4, seed=3)


def test_download_clip_embed_gather_chain(kfp_local):
    targets_dir = Path(data_stages(corpus_size=5, shard_size=3).output.path)
    index_dir = latest_index(kfp_local)
    index = json.loads((index_dir / "index.json").read_text())
    assert len(index["shards"]) == 2  # shards of 3 and 2 tracks
    tables = [pq.read_table(Path(uri, layout.CLIPS)) for uri in index["shards"]]
    assert all(t.schema.equals(schema.CLIP_SCHEMA) for t in tables)
    assert sum(t.num_rows for t in tables) == 5
    refs = tables[0].column("audio").to_pylist()[0]
    # The renderings the chosen families read (MuQ: librosa.load's 24 kHz mono of the clip;
    # Music2Latent: 44.1 kHz stereo), nothing else; the synthetic source is 44.1 kHz stereo.
    assert [(r["rendering"], r["sample_rate"], r["channels"]) for r in refs] == [
        ("mono24k", 24000, 1), ("stereo44k", 44100, 2)]
    assert all(Path(index["shards"][0], r["path"]).is_file() and r["path"].endswith(".flac") for r in refs)
    # One embedding task per shard; the family's gathered targets list both shard files.
    listing = json.loads((targets_dir / "shards.json").read_text())["files"]
    assert len(listing) == 2 and all(Path(f).is_file() for f in listing)
    assert sum(pq.read_metadata(f).num_rows for f in listing) == 5
    meta = json.loads((targets_dir / layout.META).read_text())
    assert (meta["clip_rendering"], meta["m2l_native_rate"]) == ("stereo44k", False)


def test_m2l_native_rate_reaches_the_clip_and_embed_tasks(kfp_local):
    """The option: Music2Latent reads the clip as decoded, recorded in the meta."""
    targets_dir = Path(data_stages(corpus_size=2, shard_size=2, m2l_native_rate=True).output.path)
    meta = json.loads((targets_dir / layout.META).read_text())
    assert (meta["clip_rendering"], meta["m2l_native_rate"], meta["n"]) == ("native", True, 2)
    index_dir = latest_index(kfp_local)
    (shard,) = json.loads((index_dir / "index.json").read_text())["shards"]
    for refs in pq.read_table(Path(shard, layout.CLIPS)).column("audio").to_pylist():
        assert [r["rendering"] for r in refs] == ["native", "mono24k"]
