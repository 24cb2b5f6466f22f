from kfp import dsl

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def list_sources(sources: list, corpus_size: int, shard_size: int, seed: int) -> list:
    """Plan the download fan-out: one JSON shard spec per (source, shard)."""
    from musictext.ingest.registry import list_shards
    from musictext.logs import setup_logging

    setup_logging()
    return list_shards(sources, corpus_size, shard_size, seed)
