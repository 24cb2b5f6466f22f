"""The TrainJob backend (Kubeflow Trainer v2, trainer.kubeflow.org/v1alpha1): the cluster default.

The job names a ClusterTrainingRuntime (``runtime_ref``, default ``torch-distributed``) and fills
its ``trainer``: image, command, node and process counts, resources per node, env. The runtime's
torch plugin sets PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR and
PET_MASTER_PORT in the trainer container ("node"), and the runtime gives that container no
command of its own, so the command is a bare ``torchrun -m musictext.train`` (torchrun reads the
PET_* variables) — the same entrypoint the Kubeflow SDK's own torch trainers use.

What the trainer fields cannot say (service account, node selector, tolerations, security
contexts, volumes, pod labels and annotations) goes into one ``runtimePatches`` entry on the
runtime's ``node`` replicated job; v1alpha1 allows exactly these fields there. It has no place
for a TTL or an image pull policy (the runtime's JobSet template owns them), so those settings
are refused here rather than dropped.

``run_trainjob_locally`` runs a built TrainJob's nodes as local processes with the environment
the torch plugin injects: a check of the exact command a cluster would run, without a cluster.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import model_validator

from musictext.train.launch.base import PROGRAM, register_backend
from musictext.train.launch.cluster import (
    TAIL_LINES,
    ClusterBackend,
    ClusterJobConfig,
    JobFailed,
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

TRAINJOB = register_kind("trainjob", JobKind(
    group="trainer.kubeflow.org", version="v1alpha1", plural="trainjobs", kind="TrainJob", succeeded="Complete",
    container="node",  # the torch-distributed runtime's trainer container
    pod_label="jobset.sigs.k8s.io/jobset-name",  # the JobSet (and so its pods) is named after the TrainJob
))
NODE_JOB = "node"  # the runtime's replicated job that runs the trainer
PATCH_MANAGER = "musictext.io/launcher"


class TrainJobConfig(ClusterJobConfig):
    """A TrainJob of ``nnodes`` nodes × ``nproc_per_node`` processes on a ClusterTrainingRuntime."""

    launcher: ClassVar[str] = "trainjob"

    runtime_ref: str = "torch-distributed"

    @model_validator(mode="after")
    def _representable(self) -> TrainJobConfig:
        if self.ttl_seconds_after_finished is not None:
            raise ValueError(
                "launcher 'trainjob' has no ttl_seconds_after_finished: TrainJob v1alpha1 has no TTL (the "
                "runtime's JobSet template sets one); use cleanup=always|on_success instead"
            )
        if self.image_pull_policy is not None:
            raise ValueError(
                "launcher 'trainjob' has no image_pull_policy: TrainJob v1alpha1 cannot patch it (the "
                "runtime's container sets it)"
            )
        return self


def _node_patch(config: TrainJobConfig) -> dict:
    """The runtimePatches entry: pod settings on the runtime's node job."""
    pod = {
        "metadata": pod_metadata(config),
        "spec": {
            **pod_spec_settings(config),
            "containers": [{"name": TRAINJOB.container, "securityContext": container_security_context(),
                            "volumeMounts": volume_mounts(config)}],
        },
    }
    node_job = {"name": NODE_JOB, "template": {"metadata": {"labels": config.job_labels()},
                                               "spec": {"template": pod}}}
    return {"manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_job]}}}}


def build_trainjob(config: TrainJobConfig, args: list[str], name: str, namespace: str,
                   owner: dict | None = None) -> dict:
    """The TrainJob object that runs the training program with ``args`` as ``config`` says."""
    trainer: dict[str, Any] = {
        "image": config.image,
        "command": ["torchrun", "-m", PROGRAM],
        "args": [str(a) for a in args],
        "numNodes": config.nnodes,
        "numProcPerNode": config.nproc_per_node,  # an integer here (PyTorchJob takes a string)
        "env": container_env(config),
    }
    resource_spec = resources(config)
    if resource_spec:
        trainer["resourcesPerNode"] = resource_spec
    if not trainer["env"]:
        del trainer["env"]
    return {
        "apiVersion": TRAINJOB.api_version,
        "kind": TRAINJOB.kind,
        "metadata": job_metadata(config, name, namespace, owner),
        "spec": {
            "runtimeRef": {"apiGroup": TRAINJOB.group, "kind": "ClusterTrainingRuntime", "name": config.runtime_ref},
            "activeDeadlineSeconds": config.deadline_s(),
            "trainer": trainer,
            "runtimePatches": [_node_patch(config)],
        },
    }


@register_backend
class TrainJobBackend(ClusterBackend):
    config_class = TrainJobConfig
    kind = TRAINJOB

    def build(self, args: list[str], name: str, namespace: str, owner: dict | None) -> dict:
        return build_trainjob(self.config, args, name, namespace, owner)


# -- a TrainJob's nodes as local processes ---------------------------------------------------------
@dataclass
class NodeResult:
    rank: int
    returncode: int  # negative: killed by a signal (the runner ends the others when one fails)
    output: str


class NodesFailed(JobFailed):
    def __init__(self, message: str, results: list[NodeResult]):
        super().__init__(message)
        self.results = results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_plugin_env(trainjob: dict, rank: int, master_port: int) -> dict[str, str]:
    """The variables the Trainer torch plugin sets in node ``rank``'s trainer container."""
    trainer = trainjob["spec"]["trainer"]
    return {"PET_NNODES": str(trainer.get("numNodes", 1)), "PET_NPROC_PER_NODE": str(trainer.get("numProcPerNode", 1)),
            "PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(master_port)}


def run_trainjob_locally(trainjob: dict, env: dict[str, str] | None = None,
                         node_env: dict[int, dict[str, str]] | None = None,
                         timeout_s: float | None = None) -> list[NodeResult]:
    """Run the TrainJob's nodes as processes on this machine (master 127.0.0.1, a free port).

    Each node gets ``env`` (default: this process's), the trainer's env, the torch plugin's
    PET_* variables and its ``node_env`` entry. As the runtime's JobSet does, the first node to
    fail ends the others; NodesFailed (or TimeoutError) then carries that node's log tail.
    """
    trainer = trainjob["spec"]["trainer"]
    command = [*trainer["command"], *trainer.get("args", [])]
    base = dict(os.environ if env is None else env)
    base.update({e["name"]: e["value"] for e in trainer.get("env", [])})
    port = free_port()
    outputs: list[list[str]] = []
    procs: list[subprocess.Popen] = []
    readers = []
    for rank in range(int(trainer.get("numNodes", 1))):
        node = {**base, **torch_plugin_env(trainjob, rank, port), **(node_env or {}).get(rank, {})}
        # A session per node, so that torchrun's workers end with it.
        proc = subprocess.Popen(command, env=node, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda p=proc, out=lines: out.extend(p.stdout), daemon=True)
        reader.start()
        procs.append(proc)
        outputs.append(lines)
        readers.append(reader)
    failed = _wait_nodes(procs, timeout_s)
    for reader in readers:
        reader.join(timeout=10)
    results = [NodeResult(rank, p.returncode, "".join(outputs[rank])) for rank, p in enumerate(procs)]
    if failed == -1:
        raise TimeoutError(f"TrainJob nodes not finished after {timeout_s:.0f}s\n" + _tails(results))
    if failed is not None:
        raise NodesFailed(f"node {failed} exited {procs[failed].returncode}\n" + _tails([results[failed]]), results)
    return results


def _wait_nodes(procs: list[subprocess.Popen], timeout_s: float | None) -> int | None:
    """Wait for every node; on a failure or the timeout kill the rest. The failed rank, -1 for
    the timeout, None when all succeeded."""
    deadline = time.monotonic() + timeout_s if timeout_s else None
    failed = None
    while failed is None and any(p.poll() is None for p in procs):
        failed = next((rank for rank, p in enumerate(procs) if p.poll() not in (None, 0)), None)
        if deadline and time.monotonic() > deadline:
            failed = -1
        time.sleep(0.1)
    if failed is None:
        failed = next((rank for rank, p in enumerate(procs) if p.returncode != 0), None)
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return failed


def _tails(results: list[NodeResult]) -> str:
    return "\n".join(f"--- node {r.rank}, last {TAIL_LINES} lines ---\n"
                     + "\n".join(collections.deque(r.output.splitlines(), maxlen=TAIL_LINES)) for r in results)
