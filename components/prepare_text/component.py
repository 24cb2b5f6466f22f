from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_text(family: str, profile: str, clips_index: Input[Dataset], text: Output[Dataset]):
    """Clean and tokenise the captions with the family's text tower tokenizer; the clips the
    index dropped (cross-shard duplicates, bad rows) are left out, as in the gathered targets."""
    from musictext.config import load_family_config
    from musictext.text.prepare import prepare_text as prepare
    from musictext.logs import setup_logging
    from musictext.layout import read_index

    setup_logging()
    cfg = load_family_config(family, profile)
    index = read_index(clips_index.path)
    text.metadata.update(prepare(index["shards"], text.path, cfg.text, dropped=index.get("dropped")))
