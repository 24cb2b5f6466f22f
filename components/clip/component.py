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
):
    """Cut mono fixed-length clips at every sample rate the chosen families need
    (clip_format: wav, fast to decode, or flac, smaller)."""
    from musictext.config import load_family_config
    from musictext.clip.cut import clip_shard
    from musictext.logs import setup_logging

    setup_logging()
    rates = sorted({load_family_config(f, profile).audio.sample_rate for f in families})
    clips.metadata.update(
        clip_shard(raw.path, clips.path, rates, clip_seconds, max_clips_per_track=max_clips_per_track,
                   clip_format=clip_format)
    )
