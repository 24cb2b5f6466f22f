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
) -> list:
    """Plan the download fan-out: parse every source's published metadata into records (no
    audio), merge duplicates across sources, make splits leak-free, write one record file per
    shard; return one JSON shard spec per (source, shard). `folder` sets the folder source's dir."""
    import json
    import shutil

    from musictext.ingest.plan import LISTING_STATS, LISTING_SUMMARY, plan, with_folder
    from musictext.logs import setup_logging

    setup_logging()
    specs = plan(sources, with_folder(source_options, folder, sources), corpus_size, shard_size, seed, records.path)
    shutil.copyfile(f"{records.path}/{LISTING_STATS}", stats.path)
    with open(f"{records.path}/{LISTING_SUMMARY}") as fh:
        summary = json.load(fh)
    records.metadata.update({k: summary[k] for k in ("records", "shards", "rejected")})
    return specs
