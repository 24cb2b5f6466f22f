from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gather_targets(family: str, index: Input[Dataset], targets: Output[Dataset]):
    """One family's audio targets across all shards, as the dataset training reads (no copy)."""
    from musictext.logs import setup_logging
    from musictext.shards import gather_targets as gather

    setup_logging()
    targets.metadata.update(gather(index.path, family, targets.path))
