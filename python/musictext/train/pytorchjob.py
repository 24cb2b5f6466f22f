"""PyTorchJob (kubeflow.org/v1) manifests, submission, and a wait that fails when the job fails.

Lessons from the retired kfp pytorch-launcher: the wait is bounded by a JOB timeout (wall clock
over many short polls, each with its own short API-request timeout), and a job whose condition
becomes Failed raises — it is never an "expected" terminal state.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from musictext.cluster import GPU_RESOURCE

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
CONTAINER = "pytorch"  # the operator finds the training container by this name
DEFAULT_PORT = 23456


class JobFailed(RuntimeError):
    pass


def job_name(prefix: str) -> str:
    """A DNS-1035 name (the operator derives service names from it) with a random suffix."""
    stem = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40] or "job"
    if not stem[0].isalpha():
        stem = "j-" + stem
    return f"{stem}-{uuid.uuid4().hex[:6]}"


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


def _pod_template(
    image: str, args: list[str], gpus: int, node_selector, tolerations, service_account,
    env: dict[str, str] | None, cpu, memory, image_pull_policy, labels,
) -> dict:
    container = {
        "name": CONTAINER,
        "image": image,
        # Bare torchrun: nnodes, nproc-per-node, node rank and master address/port come from
        # the PET_* variables the operator sets on every replica.
        "command": ["torchrun", "-m", "musictext.train.run"],
        "args": [str(a) for a in args],
        "env": [{"name": k, "value": str(v)} for k, v in sorted((env or {}).items())],
        "ports": [{"name": "pytorchjob-port", "containerPort": DEFAULT_PORT}],
        # NCCL and DataLoader workers need more than the default 64 MiB /dev/shm.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    resources = _resources(gpus, cpu, memory)
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if service_account:
        spec["serviceAccountName"] = service_account
    template: dict[str, Any] = {"spec": spec}
    template["metadata"] = {
        "labels": dict(labels or {}),
        # Istio sidecars keep pods alive after training and block rendezvous traffic.
        "annotations": {"sidecar.istio.io/inject": "false"},
    }
    return template


def build_pytorchjob(
    name: str,
    namespace: str,
    image: str,
    args: list[str],
    nnodes: int = 1,
    nproc_per_node: int = 1,
    gpus_per_node: int = 0,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict] | None = None,
    service_account: str | None = None,
    env: dict[str, str] | None = None,
    cpu: str | None = None,
    memory: str | None = None,
    backoff_limit: int = 0,
    ttl_seconds_after_finished: int | None = None,
    active_deadline_seconds: int | None = None,
    clean_pod_policy: str = "None",
    image_pull_policy: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict:
    """A PyTorchJob: Master ×1 plus Worker ×(nnodes-1), each running ``torchrun``."""
    if nnodes < 1 or nproc_per_node < 1:
        raise ValueError("nnodes and nproc_per_node must be >= 1")
    labels = {"app.kubernetes.io/part-of": "musictext", **(labels or {})}
    template = _pod_template(
        image, args, gpus_per_node, node_selector, tolerations, service_account, env, cpu,
        memory, image_pull_policy, labels,
    )
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if nnodes > 1:
        replicas["Worker"] = {"replicas": nnodes - 1, "restartPolicy": "OnFailure", "template": template}
    run_policy: dict[str, Any] = {"cleanPodPolicy": clean_pod_policy, "backoffLimit": backoff_limit}
    if ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    if active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = active_deadline_seconds
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nprocPerNode": str(nproc_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replicas,
        },
    }


# -- cluster side ---------------------------------------------------------------------------
def custom_objects_api():
    """CustomObjectsApi from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def current_namespace(default: str = "kubeflow") -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as fh:
            return fh.read().strip() or default
    except OSError:
        return default


def job_state(job: dict) -> tuple[str | None, str]:
    """(latest condition type whose status is True, its message); (None, "") before any."""
    conditions = (job.get("status") or {}).get("conditions") or []
    true = [c for c in conditions if str(c.get("status")) == "True"]
    # A terminal condition wins over any other still marked True; otherwise the operator's
    # latest (it appends conditions in order).
    for terminal in ("Failed", "Succeeded"):
        for c in true:
            if c.get("type") == terminal:
                return terminal, c.get("message") or c.get("reason") or ""
    if not true:
        return None, ""
    return true[-1].get("type"), true[-1].get("message") or ""


def _transient(err: Exception) -> bool:
    status = getattr(err, "status", None)
    # 404 right after create (informer lag), 409/429/5xx and connection errors: poll again.
    return status is None or status in (404, 409, 429) or int(status) >= 500


def wait_for_job(
    api,
    name: str,
    namespace: str,
    timeout_s: float = 24 * 3600,
    poll_s: float = 15.0,
    request_timeout_s: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Poll until Succeeded (return the job), Failed (raise JobFailed) or the JOB timeout."""
    deadline = clock() + timeout_s
    last_state: str | None = "<not seen>"
    while True:
        try:
            job = api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=request_timeout_s
            )
        except Exception as err:  # noqa: BLE001 - classified below
            if not _transient(err):
                raise
            log.warning("PyTorchJob %s/%s: poll failed (%s); retrying", namespace, name, err)
            job = None
        if job is not None:
            state, message = job_state(job)
            if state != last_state:
                log.info("PyTorchJob %s/%s: %s %s", namespace, name, state or "Pending", message)
                last_state = state
            if state == "Succeeded":
                return job
            if state == "Failed":
                raise JobFailed(f"PyTorchJob {namespace}/{name} failed: {message}")
        if clock() >= deadline:
            raise TimeoutError(
                f"PyTorchJob {namespace}/{name} not finished after {timeout_s:.0f}s (last state {last_state})"
            )
        sleep(poll_s)


def run_pytorchjob(
    manifest: dict,
    api=None,
    timeout_s: float = 24 * 3600,
    poll_s: float = 15.0,
    cleanup: str = "on_success",
    **wait_kw,
) -> dict:
    """Create the job, wait for it, and delete it per ``cleanup`` (always|on_success|never)."""
    if cleanup not in ("always", "on_success", "never"):
        raise ValueError(f"cleanup must be always|on_success|never, not {cleanup!r}")
    api = api or custom_objects_api()
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    log.info("created PyTorchJob %s/%s", namespace, name)
    ok = False
    try:
        job = wait_for_job(api, name, namespace, timeout_s=timeout_s, poll_s=poll_s, **wait_kw)
        ok = True
        return job
    finally:
        if cleanup == "always" or (cleanup == "on_success" and ok):
            try:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                log.info("deleted PyTorchJob %s/%s", namespace, name)
            except Exception as err:  # noqa: BLE001 - cleanup must not mask the result
                log.warning("could not delete PyTorchJob %s/%s: %s", namespace, name, err)
