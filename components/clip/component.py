from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def clip(
    raw: Input[Dataset],
    families: list,
    profile: str,
    clip_seconds: float,
    max_clips_per_track: int,
    clip_format: str,
    clips: Output[Dataset],
    m2l_native_rate: bool = False,
):
    """Cut clips and write the renderings the chosen families' upload paths read: the source
    samples as decoded (MuQ-MuLan, MERT) and/or 44.1 kHz stereo (Music2Latent, unless
    m2l_native_rate). clip_format: wav (float, fast to decode) or flac (24-bit, smaller)."""
    from musictext.clip.cut import clip_shard, renderings_for
    from musictext.logs import setup_logging

    setup_logging()
    renderings = renderings_for(families, profile, m2l_native_rate)
    clips.metadata.update(
        clip_shard(raw.path, clips.path, renderings, clip_seconds, max_clips_per_track=max_clips_per_track,
                   clip_format=clip_format)
    )
