from kfp import dsl
from kfp.dsl import Dataset, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def download(shard: dict, raw: Output[Dataset]):
    """Fetch (or, for `synthetic`, render) one shard: manifest.jsonl + audio + rejected.jsonl."""
    from musictext.ingest.download import download_shard
    from musictext.logs import setup_logging

    setup_logging()
    raw.metadata.update(download_shard(shard, raw.path))
