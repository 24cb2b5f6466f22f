from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def merge_shards(shards: Input[List[Dataset]], targets: Input[List[Dataset]], index: Output[Dataset]):
    """Index the clip and target shards (URIs) so each per-family task can read all of them."""
    from musictext.logs import setup_logging
    from musictext.embed.index import write_index

    setup_logging()
    summary = write_index([s.uri for s in shards], index.path, [t.uri for t in targets])
    index.metadata.update(summary)
