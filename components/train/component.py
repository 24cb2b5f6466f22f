from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from musictext_kfp.images import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(
    family: str,
    profile: str,
    stage: int,
    epochs_stage1: int,
    epochs_stage2: int,
    batch_size: int,
    text: Input[Dataset],
    targets: Input[Dataset],
    model: Output[Model],
    launcher: str,
    nnodes: int,
    nproc_per_node: int,
    gpus_per_node: int,
    node_selector: dict,
    train_image: str,
    timeout_minutes: int,
    init: Optional[Input[Model]] = None,
):
    """One training stage through torchrun: locally a subprocess, on a cluster a PyTorchJob.

    epochs_stage1/epochs_stage2/batch_size of 0 keep the family config's values.

    Stage 1 is InfoNCE on short clips; stage 2 (InfoNCE + MSE) starts from stage 1's model.
    """
    from musictext.config import stage_overrides
    from musictext.logs import setup_logging
    from musictext.train.launch import launch_config, run_train_task

    setup_logging()
    # The one launch object: each launcher takes the knobs it has fields for (local: no image).
    config = launch_config(
        launcher,
        nnodes=nnodes,
        nproc_per_node=nproc_per_node,
        gpus_per_node=gpus_per_node,
        node_selector=node_selector,
        image=train_image,
        timeout_s=timeout_minutes * 60 or None,
    )
    state = run_train_task(
        config,
        family=family,
        profile=profile,
        stage=stage,
        overrides=stage_overrides(epochs_stage1, epochs_stage2, batch_size),
        text=text,
        targets=targets,
        model=model,
        init=init,
    )
    model.metadata.update({k: v for k, v in state.items() if isinstance(v, (int, float, str))})
