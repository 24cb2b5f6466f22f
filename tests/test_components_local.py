"""The data components run through kfp.local as they would in pods.

kfp.local runs a component alone only when it has no input artifacts, so the artifact-passing
components are chained in a small pipeline of their own.
"""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp import dsl, local
from kfp.dsl import Dataset

from musictext import layout, schema
from musictext_kfp.components.clip import clip
from musictext_kfp.components.download import download
from musictext_kfp.components.embed_audio import embed_audio
from musictext_kfp.components.gather_targets import gather_targets
from musictext_kfp.components.list_sources import list_sources
from musictext_kfp.components.merge_shards import merge_shards


@dsl.pipeline
def data_stages(corpus_size: int, shard_size: int) -> Dataset:
    plan = list_sources(sources=["synthetic"], corpus_size=corpus_size, shard_size=shard_size, seed=3)
    with dsl.ParallelFor(plan.output) as shard:
        raw = download(shard=shard)
        clipped = clip(
            raw=raw.outputs["raw"], families=["muq", "music2latent"], profile="demo",
            clip_seconds=4.0, max_clips_per_track=1, clip_format="flac",
        )
        embedded = embed_audio(clips=clipped.outputs["clips"], families=["music2latent"], profile="demo")
    index = merge_shards(
        shards=dsl.Collected(clipped.outputs["clips"]),
        targets=dsl.Collected(embedded.outputs["targets"]),
    )
    return gather_targets(family="music2latent", index=index.outputs["index"]).outputs["targets"]


@pytest.fixture(scope="module")
def kfp_local(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_root")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def test_list_sources_plans_shards(kfp_local):
    specs = list_sources(sources=["synthetic"], corpus_size=6, shard_size=4, seed=3).output
    assert [int(s["size"]) for s in specs] == [4, 2]
    assert {s["source"] for s in specs} == {"synthetic"}


def test_unknown_source_fails_the_task(kfp_local):
    with pytest.raises(RuntimeError):
        list_sources(sources=["no-such-source"], corpus_size=6, shard_size=4, seed=3)


def test_download_clip_embed_gather_chain(kfp_local):
    targets_dir = Path(data_stages(corpus_size=5, shard_size=3).output.path)
    index_dir = next(Path(kfp_local).glob("data-stages-*/merge-shards/index"))
    index = json.loads((index_dir / "index.json").read_text())
    assert len(index["shards"]) == 2  # shards of 3 and 2 tracks
    tables = [pq.read_table(Path(uri, layout.CLIPS)) for uri in index["shards"]]
    assert all(t.schema.equals(schema.CLIP_SCHEMA) for t in tables)
    assert sum(t.num_rows for t in tables) == 5
    refs = tables[0].column("audio").to_pylist()[0]
    # Every rate the chosen families need (MuQ 24 kHz, Music2Latent 44.1 kHz), nothing else.
    assert sorted(r["sample_rate"] for r in refs) == [24000, 44100]
    assert all(Path(index["shards"][0], r["path"]).is_file() for r in refs)
    # One embedding task per shard; the family's gathered targets list both shard files.
    listing = json.loads((targets_dir / "shards.json").read_text())["files"]
    assert len(listing) == 2 and all(Path(f).is_file() for f in listing)
    assert sum(pq.read_metadata(f).num_rows for f in listing) == 5
