from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def list_sources(
    sources: list,
    corpus_size: int,
    shard_size: int,
    seed: int,
    source_options: dict,
    folder: str,
    records: Output[Dataset],
    stats: Output[Markdown],
    max_fanout: int = 1000,  # musictext_kfp.fanout.MAX_FANOUT (KFP copies this line: a literal)
) -> list:
    """Plan the download fan-out: parse every source's published metadata into records (no
    audio), merge duplicates across sources, make splits leak-free, write one record file per
    shard; return one JSON shard spec per (source, shard). `folder` sets the folder source's dir.

    A listing that would cut more than ``max_fanout`` shards is cut with the smallest larger
    shard size that fits (each fan-out item then holds more records), so the loop stays as wide
    as KFP handles; records.metadata["shard_size"] is the size used.
    """
    import json
    import shutil

    from musictext.ingest.plan import LISTING_STATS, LISTING_SUMMARY, plan, with_folder
    from musictext.logs import setup_logging

    setup_logging()
    options = with_folder(source_options, folder, sources)
    specs = plan(sources, options, corpus_size, shard_size, seed, records.path, max_shards=max_fanout)
    with open(f"{records.path}/{LISTING_SUMMARY}") as fh:
        summary = json.load(fh)
    shutil.copyfile(f"{records.path}/{LISTING_STATS}", stats.path)
    records.metadata.update({k: summary[k] for k in ("records", "shards", "rejected", "shard_size")})
    return specs
