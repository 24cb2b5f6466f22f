"""The shard loop stays within KFP's fan-out limit, however many shards a listing asks for."""

import json
from pathlib import Path

import pytest

from musictext.ingest.records import read_records
from musictext_kfp.components.list_sources import list_sources
from musictext.ingest.plan import fitting_shard_size, shard_count
from musictext_kfp.fanout import MAX_FANOUT


@pytest.mark.parametrize("per_source, size, limit, want", [
    ({"a": 1200}, 1, 1000, 2),  # 1,200 shards of 1 -> 600 of 2
    ({"a": 1000}, 1, 1000, 1),  # at the limit: unchanged
    ({"a": 10, "b": 5}, 100, 1000, 100),  # already few shards
    ({"a": 999, "b": 999, "c": 3}, 1, 10, 250),  # 4+4+1 shards of 250; 249 would make 11
    ({"a": 7, "b": 7}, 1, 2, 7),  # one shard per source
])
def test_smallest_shard_size_within_the_limit(per_source, size, limit, want):
    got = fitting_shard_size(per_source, size, limit)
    assert got == want
    assert shard_count(per_source, got) <= limit
    assert got == size or shard_count(per_source, got - 1) > limit  # nothing smaller fits


def test_fewer_slots_than_sources_is_refused():
    with pytest.raises(ValueError, match="below the number of sources"):
        fitting_shard_size({"a": 5, "b": 5, "c": 5}, 1, 2)


def test_a_1200_shard_listing_fans_out_within_the_limit(kfp_local):
    """1,200 one-record shards asked for: the listing cuts at most MAX_FANOUT (1,000) shards,
    and every listed record is in exactly one of them."""
    task = list_sources(sources=["synthetic"], source_options={}, folder="", corpus_size=1200, shard_size=1, seed=5)
    specs = task.outputs["Output"]
    records = task.outputs["records"]
    assert MAX_FANOUT == 1000 == list_sources.component_spec.inputs["max_fanout"].default
    assert len(specs) <= MAX_FANOUT
    assert records.metadata["shard_size"] == 2 and len(specs) == 600
    assert records.metadata["shards"] == len(specs) and records.metadata["records"] == 1200
    files = sorted(Path(records.path).rglob("shard-*.jsonl"))
    assert sorted(str(f.relative_to(records.path)) for f in files) == sorted(s["records"] for s in specs)
    ids = [r.track_id for s in specs for r in read_records(str(Path(records.path, s["records"])))]
    assert len(ids) == len(set(ids)) == 1200
    assert sum(int(s["size"]) for s in specs) == 1200
    summary = json.loads(Path(records.path, "listing.json").read_text())
    assert summary["shards"] == len(specs)
