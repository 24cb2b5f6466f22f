from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from musictext_kfp.images import IMAGE

# The train task is a launcher: its pod's node selector, tolerations and resources are meant for
# the training job, so KFP hands them over (task_config) instead of applying them to this pod.
# Env and volumes (the bucket Secret) apply to this pod too: it reads and writes artifacts.
PASSTHROUGHS = [
    dsl.TaskConfigField.RESOURCES,
    dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
    dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
    dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_VOLUMES, apply_to_task=True),
]


@dsl.component(base_image=IMAGE, install_kfp_package=False, task_config_passthroughs=PASSTHROUGHS)
def train(
    family: str,
    profile: str,
    stage: int,
    epochs_stage1: int,
    epochs_stage2: int,
    batch_size: int,
    seed: int,
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
    task_config: dsl.TaskConfig,
    train_options: dict = {},
    run_id: str = "",
    task_id: str = "",
    init: Optional[Input[Model]] = None,
):
    """One training stage through torchrun: locally a subprocess, on a cluster a Kubeflow
    TrainJob or PyTorchJob.

    epochs_stage1/epochs_stage2/batch_size of 0 keep the family config's values; ``seed`` is
    the training seed. The launch config takes the pipeline's knobs, then what KFP forwards
    from this task's pod settings (task_config), then ``train_options`` (any launch-config
    field, nested). ``run_id``/``task_id`` (the KFP run and task) label the job and name it, so
    a retried task finds the job its earlier attempt started.

    Stage 1 is InfoNCE on short clips; stage 2 (InfoNCE + MSE) starts from stage 1's model.
    """
    from musictext.config import deep_merge, stage_overrides
    from musictext.logs import setup_logging
    from musictext.train.launch import pipeline_launch_config, run_train_task
    from musictext_kfp.task_config import launch_fields

    setup_logging()
    # The one launch object: each launcher takes the fields it has (local: no image); a name no
    # launcher has fails here.
    config = pipeline_launch_config(
        launcher,
        nnodes=nnodes,
        nproc_per_node=nproc_per_node,
        gpus_per_node=gpus_per_node,
        node_selector=node_selector,
        image=train_image,
        timeout_minutes=timeout_minutes,
        extras={"run_id": run_id or None, "task_id": task_id or None,
                **launch_fields(task_config.resources, task_config.tolerations, task_config.node_selector)},
        train_options=train_options,
    )
    state = run_train_task(
        config,
        family=family,
        profile=profile,
        stage=stage,
        overrides=deep_merge(stage_overrides(epochs_stage1, epochs_stage2, batch_size), {"train": {"seed": seed}}),
        text=text,
        targets=targets,
        model=model,
        init=init,
    )
    model.metadata.update({k: v for k, v in state.items() if isinstance(v, (int, float, str))})
