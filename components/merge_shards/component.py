from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def merge_shards(
    shards: Input[List[Dataset]],
    targets: Input[List[Dataset]],
    raws: Input[List[Dataset]],
    listing: Input[Dataset],
    index: Output[Dataset],
    corpus: Output[Markdown],
):
    """Index the clip and target shards (URIs) so each per-family task can read all of them;
    gather every listing/download/clip rejection and the corpus statistics. Bad clip rows and
    a clip id in two shards are dropped here (recorded once), and text and targets leave them out."""
    import shutil

    from musictext import layout, storage
    from musictext.embed.index import write_index
    from musictext.logs import setup_logging

    setup_logging()
    summary = write_index([s.uri for s in shards], index.path, [t.uri for t in targets],
                          upstream_dirs=[listing.uri, *[r.uri for r in raws]])
    shutil.copyfile(storage.join(index.path, layout.CORPUS_MD), corpus.path)
    index.metadata.update(summary)
