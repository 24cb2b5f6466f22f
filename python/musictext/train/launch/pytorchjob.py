"""The PyTorchJob backend (Kubeflow Training Operator v1, kubeflow.org/v1): for clusters without
Kubeflow Trainer v2. Its config adds the operator's own run policy to ClusterJobConfig; pods,
the wait and cleanup are the shared ones in ``musictext.train.launch.cluster``."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from musictext.train.launch.base import PROGRAM, register_backend
from musictext.train.launch.cluster import (
    ClusterBackend,
    ClusterJobConfig,
    JobKind,
    container_env,
    container_security_context,
    job_metadata,
    pod_metadata,
    pod_spec_settings,
    register_kind,
    resources,
    volume_mounts,
)

PYTORCHJOB = register_kind("pytorchjob", JobKind(
    group="kubeflow.org", version="v1", plural="pytorchjobs", kind="PyTorchJob", succeeded="Succeeded",
    container="pytorch",  # the operator injects its env only into the container of this name
    pod_label="training.kubeflow.org/job-name",
))
DEFAULT_PORT = 23456


class PyTorchJobConfig(ClusterJobConfig):
    """A PyTorchJob of Master ×1 + Worker ×(nnodes-1), each node running ``nproc_per_node``
    processes under torchrun in ``image``."""

    launcher: ClassVar[str] = "pytorchjob"

    # Pod restarts (restartPolicy OnFailure) before the job is Failed. 0: a failed attempt
    # fails the task, whose retry resumes from the checkpoint.
    backoff_limit: int = Field(0, ge=0)
    # Kill pods still running when the job ends (a worker hung in a collective keeps its GPU).
    clean_pod_policy: Literal["None", "Running", "All"] = "Running"


def _container(config: PyTorchJobConfig, args: list[str]) -> dict:
    container: dict[str, Any] = {
        "name": PYTORCHJOB.container,
        "image": config.image,
        # Bare torchrun: nnodes, nproc-per-node, node rank and master address/port come from
        # the PET_* variables the operator sets on every replica.
        "command": ["torchrun", "-m", PROGRAM],
        "args": [str(a) for a in args],
        "env": container_env(config),
        "ports": [{"name": "pytorchjob-port", "containerPort": DEFAULT_PORT}],
        "securityContext": container_security_context(),
        "volumeMounts": volume_mounts(config),
    }
    if config.image_pull_policy:
        container["imagePullPolicy"] = config.image_pull_policy
    resource_spec = resources(config)
    if resource_spec:
        container["resources"] = resource_spec
    return container


def build_pytorchjob(config: PyTorchJobConfig, args: list[str], name: str, namespace: str,
                     owner: dict | None = None) -> dict:
    """The PyTorchJob object that runs the training program with ``args`` as ``config`` says."""
    template = {"metadata": pod_metadata(config),
                "spec": {**pod_spec_settings(config), "containers": [_container(config, args)]}}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if config.nnodes > 1:
        replicas["Worker"] = {"replicas": config.nnodes - 1, "restartPolicy": "OnFailure", "template": template}
    run_policy: dict[str, Any] = {"cleanPodPolicy": config.clean_pod_policy, "backoffLimit": config.backoff_limit,
                                  "activeDeadlineSeconds": config.deadline_s()}
    if config.ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    return {
        "apiVersion": PYTORCHJOB.api_version,
        "kind": PYTORCHJOB.kind,
        "metadata": job_metadata(config, name, namespace, owner),
        "spec": {
            "nprocPerNode": str(config.nproc_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replicas,
        },
    }


@register_backend
class PyTorchJobBackend(ClusterBackend):
    config_class = PyTorchJobConfig
    kind = PYTORCHJOB

    def build(self, args: list[str], name: str, namespace: str, owner: dict | None) -> dict:
        return build_pytorchjob(self.config, args, name, namespace, owner)
