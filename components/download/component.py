from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def download(shard: dict, records: Input[Dataset], raw: Output[Dataset]):
    """Fetch (or, for `synthetic`, render) one shard's audio: manifest.jsonl + audio +
    rejected.jsonl, with the source options the listing used; items an earlier attempt fetched
    are kept, failures recorded per item."""
    from musictext.ingest.download import download_shard
    from musictext.logs import setup_logging

    setup_logging()
    raw.metadata.update(download_shard(shard, records.path, raw.path))
