from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_text(family: str, profile: str, clips_index: Input[Dataset], text: Output[Dataset]):
    """Clean and tokenise the captions with the family's text tower tokenizer."""
    from musictext.config import load_family_config
    from musictext.text.prepare import prepare_text as prepare
    from musictext.logs import setup_logging
    from musictext.layout import index_shards

    setup_logging()
    cfg = load_family_config(family, profile)
    text.metadata.update(prepare(index_shards(clips_index.path), text.path, cfg.text))
