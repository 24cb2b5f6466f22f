from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def embed_audio(family: str, profile: str, clips_index: Input[Dataset], targets: Output[Dataset]):
    """Audio target vectors computed exactly as Navidrome's sidecar does (runs on the GPU pool)."""
    from musictext.audio.targets import embed_clips
    from musictext.config import load_family_config
    from musictext.logs import setup_logging
    from musictext.shards import read_index

    setup_logging()
    cfg = load_family_config(family, profile)
    targets.metadata.update(embed_clips(read_index(clips_index.path), targets.path, cfg))
