"""The KFP train component's body: KFP artifacts in, a TrainJobSpec launched, train_state out.

Artifacts are duck-typed (``.path``, ``.uri``) so this module never imports kfp.
"""

from __future__ import annotations

import os

from musictext import storage
from musictext.layout import TENSORBOARD_DIR
from musictext.train.launch.base import LaunchConfig, TrainJobSpec, launch


def artifact_location(artifact, config: LaunchConfig) -> str:
    """Where a KFP artifact directory is reachable by the training processes.

    Locally (and inside the launching pod) its ``.path``; pods of a cluster job do not mount the
    launcher's filesystem, so they get the bucket ``.uri``.
    """
    return artifact.path if config.shares_filesystem else artifact.uri


def run_train_task(
    config: LaunchConfig,
    *,
    family: str,
    profile: str,
    stage: int,
    overrides: dict | None,
    text,
    targets,
    model,
    init=None,
    **backend_options,
) -> dict:
    """Train one stage of ``family`` from the artifacts with ``config``'s backend.

    ``backend_options`` go to the backend (e.g. ``api`` for the PyTorchJob backend).
    """
    job = TrainJobSpec(
        family=family,
        profile=profile,
        overrides=overrides or {},
        stage=stage,
        text_dir=artifact_location(text, config),
        targets_dir=artifact_location(targets, config),
        out_dir=artifact_location(model, config),
        init_dir=artifact_location(init, config) if init else None,
        # TensorBoard events travel with the model artifact (a bucket on a cluster).
        log_dir=storage.join(artifact_location(model, config), TENSORBOARD_DIR),
    )
    state = launch(job, config, **backend_options)
    if not config.shares_filesystem:
        mirror_to_local(model.uri, model.path)
    return state


def mirror_to_local(uri: str, path: str) -> None:
    """Copy what the job wrote at the artifact's bucket URI to its local path.

    The KFP launcher uploads an output artifact's local path to its URI when the task ends; an
    empty local path would replace what the cluster job wrote there.
    """
    fs, remote = storage.fs_for(uri)
    os.makedirs(path, exist_ok=True)
    fs.get(remote.rstrip("/") + "/", path, recursive=True)
