from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from musictext_kfp.images import AUDIO_IMAGE


@dsl.component(base_image=AUDIO_IMAGE, install_kfp_package=False)
def embed_audio(
    clips: Input[Dataset],
    families: list,
    profile: str,
    targets: Output[Dataset],
    m2l_native_rate: bool = False,
):
    """Audio target vectors of one clip shard: the vectors Navidrome's upload path stores for
    each clip's file (m2l_native_rate: Music2Latent on the native clip, not its 44.1 kHz stereo
    rendering).

    Runs on the GPU node pool in the audio image (transformers<5 for MuQ-MuLan and MERT's
    remote code); writes targets/<family>/ per family.
    """
    from musictext.embed.targets import embed_shard
    from musictext.logs import setup_logging

    setup_logging()
    targets.metadata.update(
        embed_shard(clips.path, targets.path, families, profile, m2l_native_rate=m2l_native_rate)
    )
