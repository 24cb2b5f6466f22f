"""PyTorchJob (kubeflow.org/v1) on the cluster: submission, and a wait that fails when the job fails.

The object itself is built from its typed config in ``musictext.train.launch.pytorchjob``.

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
