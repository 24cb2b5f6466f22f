from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gather_targets(family: str, index: Input[Dataset], targets: Output[Dataset]):
    """One family's audio targets across all shards, as the dataset training reads (no copy, but
    for a shard that holds clips the index dropped: a copy without them)."""
    from musictext.logs import setup_logging
    from musictext.embed.index import gather_targets as gather

    setup_logging()
    targets.metadata.update(gather(index.path, family, targets.path))
