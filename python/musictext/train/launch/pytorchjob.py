"""The PyTorchJob backend (Kubeflow Training Operator v1): its typed config, the manifest built
from it, and the launch (submit, wait, clean up through ``musictext.train.pytorchjob``)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from musictext.cluster import GPU_RESOURCE, GPU_TOLERATION
from musictext.hub import is_remote
from musictext.train import pytorchjob as api_ops
from musictext.train.launch.base import PROGRAM, Backend, LaunchConfig, TrainJobSpec, register_backend

log = logging.getLogger(__name__)

# The chart's PodDisruptionBudget selects training pods by this label.
TRAINING_LABELS = {"app.kubernetes.io/component": "training"}


class PyTorchJobConfig(LaunchConfig):
    """A PyTorchJob of Master ×1 + Worker ×(nnodes-1), each node running ``nproc_per_node``
    processes under torchrun in ``image``."""

    launcher: ClassVar[str] = "pytorchjob"
    shares_filesystem: ClassVar[bool] = False

    image: str
    gpus_per_node: int = Field(0, ge=0)
    node_selector: dict[str, str] = Field(default_factory=dict)
    # None: tolerate the GPU pool's taint when the job asks for GPUs (as the pipeline's GPU steps do).
    tolerations: list[dict[str, Any]] | None = None
    namespace: str | None = None  # None: the launcher pod's own namespace
    name: str | None = None  # None: musictext-<family>-s<stage>-<random>
    service_account: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cpu: str | None = None
    memory: str | None = None
    labels: dict[str, str] = Field(default_factory=lambda: dict(TRAINING_LABELS))
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    backoff_limit: int = Field(0, ge=0)
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    active_deadline_seconds: int | None = Field(None, ge=1)
    clean_pod_policy: Literal["None", "Running", "All"] = "None"
    # The wait: a JOB timeout over many short polls; delete the job always|on_success|never.
    timeout_s: float = Field(24 * 3600, gt=0)
    poll_s: float = Field(15.0, ge=0)
    cleanup: Literal["always", "on_success", "never"] = "on_success"

    @model_validator(mode="before")
    @classmethod
    def _needs_image(cls, data: Any) -> Any:
        # Checked before the field so that None and "" (a KFP default) get this message too.
        if isinstance(data, dict) and not data.get("image"):
            raise ValueError("launcher 'pytorchjob' needs the training image (image=...): its pods run it")
        return data

    def pod_tolerations(self) -> list[dict[str, Any]]:
        if self.tolerations is not None:
            return [dict(t) for t in self.tolerations]
        return [dict(GPU_TOLERATION)] if self.gpus_per_node else []


def _resources(gpus: int, cpu: str | None, memory: str | None) -> dict:
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if gpus:
        limits[GPU_RESOURCE] = gpus
    if cpu:
        requests["cpu"] = limits["cpu"] = cpu
    if memory:
        requests["memory"] = limits["memory"] = memory
    out = {}
    if limits:
        out["limits"] = limits
    if requests:
        out["requests"] = requests
    return out


def _container(config: PyTorchJobConfig, args: list[str]) -> dict:
    container = {
        "name": api_ops.CONTAINER,
        "image": config.image,
        # Bare torchrun: nnodes, nproc-per-node, node rank and master address/port come from
        # the PET_* variables the operator sets on every replica.
        "command": ["torchrun", "-m", PROGRAM],
        "args": [str(a) for a in args],
        "env": [{"name": k, "value": v} for k, v in sorted(config.env.items())],
        "ports": [{"name": "pytorchjob-port", "containerPort": api_ops.DEFAULT_PORT}],
        # NCCL and DataLoader workers need more than the default 64 MiB /dev/shm.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if config.image_pull_policy:
        container["imagePullPolicy"] = config.image_pull_policy
    resources = _resources(config.gpus_per_node, config.cpu, config.memory)
    if resources:
        container["resources"] = resources
    return container


def _pod_template(config: PyTorchJobConfig, args: list[str], labels: dict[str, str]) -> dict:
    spec: dict[str, Any] = {
        "containers": [_container(config, args)],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    tolerations = config.pod_tolerations()
    if tolerations:
        spec["tolerations"] = tolerations
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    return {
        "metadata": {
            "labels": dict(labels),
            # Istio sidecars keep pods alive after training and block rendezvous traffic.
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": spec,
    }


def build_pytorchjob(config: PyTorchJobConfig, args: list[str], name: str, namespace: str) -> dict:
    """The PyTorchJob object that runs the training program with ``args`` as ``config`` says."""
    labels = {"app.kubernetes.io/part-of": "musictext", **config.labels}
    template = _pod_template(config, args, labels)
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if config.nnodes > 1:
        replicas["Worker"] = {"replicas": config.nnodes - 1, "restartPolicy": "OnFailure", "template": template}
    run_policy: dict[str, Any] = {"cleanPodPolicy": config.clean_pod_policy, "backoffLimit": config.backoff_limit}
    if config.ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    if config.active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = config.active_deadline_seconds
    return {
        "apiVersion": f"{api_ops.GROUP}/{api_ops.VERSION}",
        "kind": api_ops.KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nprocPerNode": str(config.nproc_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replicas,
        },
    }


@register_backend
class PyTorchJobBackend(Backend):
    """Creates the job, waits for Succeeded (Failed and the job timeout raise), cleans up."""

    config_class = PyTorchJobConfig

    def __init__(self, config: PyTorchJobConfig, api=None):
        super().__init__(config)
        self.api = api  # a CustomObjectsApi; None: from the cluster at launch

    def run(self, job: TrainJobSpec) -> None:
        config = self.config
        if not is_remote(job.out_dir):
            log.warning("out_dir %s is local: pods will write it on their own disk", job.out_dir)
        manifest = build_pytorchjob(
            config,
            job.program_args(),
            name=config.name or api_ops.job_name(f"musictext-{job.family_name}-s{job.stage}"),
            namespace=config.namespace or api_ops.current_namespace(),
        )
        api_ops.run_pytorchjob(manifest, api=self.api, timeout_s=config.timeout_s, poll_s=config.poll_s,
                               cleanup=config.cleanup)
