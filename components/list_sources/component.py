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
    from musictext.corpus_stats import corpus_stats, stats_markdown
    from musictext.ingest.plan import plan, with_folder
    from musictext.ingest.records import read_records
    from musictext.logs import setup_logging
    from musictext.rejects import read_rejections

    setup_logging()
    specs = plan(sources, with_folder(source_options, folder, sources), corpus_size, shard_size, seed, records.path)
    rows = [r.row() for spec in specs for r in read_records(f"{records.path}/{spec['records']}")]
    table = corpus_stats(rows, read_rejections(records.path))
    with open(stats.path, "w") as fh:
        fh.write(stats_markdown(table, "Listed records per source"))
    records.metadata.update({"records": len(rows), "shards": len(specs), "rejected": len(read_rejections(records.path))})
    return specs
