from kfp import dsl
from kfp.dsl import Dataset, Input

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check_shard(shard: dict, records: Input[Dataset]) -> dict:
    """Dry run of one fan-out item: read and validate the shard's records (no audio is
    fetched); its counts per split."""
    from musictext.ingest.download import check_shard_records
    from musictext.logs import setup_logging

    setup_logging()
    return check_shard_records(shard, records.path)
