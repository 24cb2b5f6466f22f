from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def merge_shards(shards: Input[List[Dataset]], index: Output[Dataset]):
    """Index the clip shards (URIs) so each per-family task can read all of them."""
    from musictext.logs import setup_logging
    from musictext.shards import write_index

    setup_logging()
    index.metadata.update(write_index([s.uri for s in shards], index.path))
