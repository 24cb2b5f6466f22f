from kfp import dsl

from musictext_kfp.images import IMAGE

@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check_params(
    sources: list,
    source_options: dict,
    folder: str,
    corpus_size: int,
    shard_size: int,
    seed: int,
    clip_seconds: float = 0.0,
    max_clips_per_track: int = 0,
    clip_format: str = "",
    m2l_native_rate: bool = False,
    families: list = [],
    profile: str = "",
    epochs_stage1: int = 0,
    epochs_stage2: int = 0,
    batch_size: int = 0,
    gpu_node_selector: dict = {},
    train_launcher: str = "",
    train_nodes: int = 0,
    gpus_per_node: int = 0,
    procs_per_node: int = 0,
    train_image: str = "",
    train_timeout_minutes: int = 0,
    train_options: dict = {},
    listing_only: bool = False,
):
    """The run's first task: check every pipeline parameter it was given before anything is
    listed or fetched, failing with all the bad ones named. Its own task (not the listing's) so
    that changing a training knob never changes the listing's cache key and so its data.

    ``listing_only`` (the fan-out dry run, which has only the listing parameters): the other
    parameters' defaults are placeholders (kfp.local cannot pass None for an int) and are not
    checked.
    """
    given = dict(locals())  # before any import
    if given.pop("listing_only"):
        # The parameters every pipeline has: the listing's (a component body sees no module names).
        listing = ("sources", "source_options", "folder", "corpus_size", "shard_size", "seed")
        given = {name: given[name] for name in listing}
    from musictext.logs import setup_logging
    from musictext.params import check_run_params

    setup_logging()
    check_run_params(given)
