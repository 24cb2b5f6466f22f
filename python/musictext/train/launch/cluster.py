"""What both cluster backends (TrainJob, PyTorchJob) share: one config base, one set of pod
settings, and one way to run a job object on the Kubernetes API.

The API calls go through the kubernetes client (CustomObjectsApi for the job, CoreV1Api for its
pods' logs and events) rather than the Kubeflow SDK's TrainerClient: every TrainerClient job call
(``train``, ``get_job``, ``get_job_logs``, ``wait_for_job_status``) first reads the cluster-scoped
ClusterTrainingRuntime, which a namespaced Role cannot grant; its wait counts polls instead of wall
clock and stops on the first API error; ``delete_job`` hides the HTTP status (a 404 "already gone"
reads like any failure); and it has no create-or-adopt by name, owner references or PyTorchJob.
docs/launchers.md has the details.

Running a job (``run_job``):
- a deterministic name from (run_id, task_id, family, stage) makes a retried KFP task find its
  job: running -> adopt and wait; succeeded -> adopt the result; failed -> delete, wait until it
  is gone, create again (training resumes from its checkpoint);
- the wait is a wall-clock job timeout over short polls; a Failed condition raises, with the log
  tails and events of the job's pods in the message;
- SIGTERM/SIGINT (a KFP cancel) and the timeout delete the job; otherwise ``cleanup`` decides;
- with KFP_POD_NAME/KFP_POD_UID in the environment the job is owned by the launcher pod, so
  deleting the run's pods garbage-collects it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import signal
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from musictext.cluster import (
    BUCKET_SECRET_DIR,
    CREDENTIALS_ENV,
    DEFAULT_BUCKET_SECRET_KEY,
    GPU_RESOURCE,
    GPU_TOLERATION,
    credentials_path,
)
from musictext.hub import is_remote
from musictext.process import on_stop_signals
from musictext.train.launch.base import Backend, LaunchConfig, TrainJobSpec

log = logging.getLogger(__name__)

# -- what the pods look like ----------------------------------------------------------------------
# The image's user (images/Dockerfile: a fixed numeric UID so runAsNonRoot can be verified).
IMAGE_UID = 10001
# Writable paths of the image under a read-only root filesystem: torchrun and the trainer write
# under /tmp; model and bucket-mirror caches (HF_HOME, MUSICTEXT_CACHE) under the cache dir.
WRITABLE_DIRS = {"tmp": "/tmp", "cache": "/var/cache/musictext"}
RUN_ID_LABEL = "musictext.io/run-id"
# The chart's PodDisruptionBudget selects training pods by these labels.
TRAINING_LABELS = {"app.kubernetes.io/part-of": "musictext", "app.kubernetes.io/component": "training"}
# Istio sidecars keep pods alive after training and block rendezvous traffic.
POD_ANNOTATIONS = {"sidecar.istio.io/inject": "false"}
_QUANTITY = r"^\d+(\.\d+)?([eE]\d+|[KMGTPE]i|[numkMGTPE])?$"  # e.g. 8, 500m, 32Gi, 1.5, 1e3
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


class ClusterJobConfig(LaunchConfig):
    """Settings every cluster backend shares (contract C1): the pods, the job, and the wait."""

    shares_filesystem: ClassVar[bool] = False

    image: str
    gpus_per_node: int = Field(0, ge=0)
    node_selector: dict[str, str] = Field(default_factory=dict)
    # None: tolerate the GPU pool's taint when the job asks for GPUs (as the pipeline's GPU steps do).
    tolerations: list[dict[str, Any]] | None = None
    namespace: str | None = None  # None: the launcher pod's own namespace
    name: str | None = Field(None, max_length=63)  # None: from run_id/task_id, else random
    service_account: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    requests: dict[str, str] = Field(default_factory=dict)  # e.g. {"cpu": "8", "memory": "32Gi"}
    limits: dict[str, str] = Field(default_factory=dict)  # the GPU limit comes from gpus_per_node
    # NCCL and DataLoader workers need more than the default 64 MiB /dev/shm; it counts against
    # the pod's memory.
    shm_size: str = Field("8Gi", pattern=_QUANTITY)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    # The cluster's own deadline for the job; None: the launcher's timeout_s, so a job whose
    # launcher died still ends.
    active_deadline_seconds: int | None = Field(None, ge=1)
    # The wait: a JOB timeout over many short polls.
    timeout_s: float = Field(24 * 3600, gt=0)
    poll_s: float = Field(15.0, ge=0)
    # Delete the finished job always|on_success|never (cancel and timeout always delete).
    cleanup: Literal["always", "on_success", "never"] = "on_success"
    labels: dict[str, str] = Field(default_factory=dict)
    bucket_secret: str = ""  # a Secret holding a service-account key; "" = none (Workload Identity)
    bucket_secret_key: str = DEFAULT_BUCKET_SECRET_KEY
    run_id: str = Field("", pattern=_LABEL_VALUE, max_length=63)  # KFP run id
    task_id: str = ""  # KFP task id: with run_id, a retried task finds its job by name

    @model_validator(mode="before")
    @classmethod
    def _needs_image(cls, data: Any) -> Any:
        # Checked before the field so that None and "" (a KFP default) get this message too.
        if isinstance(data, dict) and not data.get("image"):
            raise ValueError(f"launcher {cls.launcher!r} needs the training image (image=...): its pods run it")
        return data

    @field_validator("env", "requests", "limits", "node_selector", "labels", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        # Numbers from YAML values or JSON options (cpu: 8, OMP_NUM_THREADS: 4) are strings to the API.
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) or isinstance(v, bool) else str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _quantities(self) -> ClusterJobConfig:
        for where, values in (("requests", self.requests), ("limits", self.limits)):
            for resource, value in values.items():
                if not re.match(_QUANTITY, str(value)):
                    raise ValueError(f"{where}.{resource}={value!r} is not a Kubernetes quantity")
        return self

    def pod_tolerations(self) -> list[dict[str, Any]]:
        if self.tolerations is not None:
            return [dict(t) for t in self.tolerations]
        return [dict(GPU_TOLERATION)] if self.gpus_per_node else []

    def deadline_s(self) -> int:
        return self.active_deadline_seconds or math.ceil(self.timeout_s)

    def job_labels(self) -> dict[str, str]:
        labels = {**self.labels, **TRAINING_LABELS}
        if self.run_id:
            labels[RUN_ID_LABEL] = self.run_id
        return labels


def resources(config: ClusterJobConfig) -> dict[str, dict]:
    """requests/limits of one training container; the GPU limit from gpus_per_node."""
    limits: dict[str, Any] = dict(config.limits)
    if config.gpus_per_node:
        limits[GPU_RESOURCE] = config.gpus_per_node
    return {k: v for k, v in (("requests", dict(config.requests)), ("limits", limits)) if v}


def container_env(config: ClusterJobConfig) -> list[dict[str, str]]:
    env = dict(config.env)
    if config.bucket_secret:
        env[CREDENTIALS_ENV] = credentials_path(config.bucket_secret_key)
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def container_security_context() -> dict:
    """The restricted Pod Security Standard, on the container (where it overrides the pod's)."""
    return {
        "runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID,
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict:
    return {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID, "fsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def volume_mounts(config: ClusterJobConfig) -> list[dict]:
    mounts = [{"name": name, "mountPath": path} for name, path in WRITABLE_DIRS.items()]
    mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if config.bucket_secret:
        mounts.append({"name": "bucket-credentials", "mountPath": BUCKET_SECRET_DIR, "readOnly": True})
    return mounts


def volumes(config: ClusterJobConfig) -> list[dict]:
    out = [{"name": name, "emptyDir": {}} for name in WRITABLE_DIRS]
    out.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": config.shm_size}})
    if config.bucket_secret:
        out.append({"name": "bucket-credentials", "secret": {"secretName": config.bucket_secret}})
    return out


def pod_spec_settings(config: ClusterJobConfig) -> dict:
    """Pod-level fields both backends set (the containers are each backend's own)."""
    spec: dict[str, Any] = {"securityContext": pod_security_context(), "volumes": volumes(config)}
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    tolerations = config.pod_tolerations()
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def pod_metadata(config: ClusterJobConfig) -> dict:
    return {"labels": config.job_labels(), "annotations": dict(POD_ANNOTATIONS)}


# -- job kinds and names ----------------------------------------------------------------------------
@dataclass(frozen=True)
class JobKind:
    """A training job custom resource: where it lives in the API and how its pods are found."""

    group: str
    version: str
    plural: str
    kind: str
    succeeded: str  # the condition type that means success
    container: str  # the training container's name in its pods
    pod_label: str  # label the controller puts on the job's pods, valued with the job's name

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def coordinates(self, namespace: str) -> tuple[str, str, str, str]:
        return self.group, self.version, namespace, self.plural


JOB_KINDS: dict[str, JobKind] = {}


def register_kind(launcher: str, kind: JobKind) -> JobKind:
    JOB_KINDS[launcher] = kind
    return kind


def _dns_stem(prefix: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40].rstrip("-") or "job"
    return stem if stem[0].isalpha() else "j-" + stem


def job_name(prefix: str, key: str | None = None) -> str:
    """A DNS-1035 name (controllers derive service names from it): ``prefix`` plus a hash of
    ``key`` (the same key gives the same name: a retried task finds its job), else random."""
    suffix = hashlib.sha256(key.encode()).hexdigest()[:10] if key else uuid.uuid4().hex[:6]
    return f"{_dns_stem(prefix)}-{suffix}"


def name_for(config: ClusterJobConfig, job: TrainJobSpec) -> str:
    if config.name:
        return config.name
    key = "/".join([config.run_id, config.task_id, job.family_name, str(job.stage)]) if config.run_id else None
    return job_name(f"musictext-{job.family_name}-s{job.stage}", key)


# -- the API ----------------------------------------------------------------------------------------
class JobFailed(RuntimeError):
    pass


class JobCancelled(KeyboardInterrupt):
    """SIGTERM/SIGINT reached the launcher while it waited (e.g. the KFP run was cancelled)."""


def _load_kube_config() -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def custom_objects_api():
    """CustomObjectsApi from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client

    _load_kube_config()
    return client.CustomObjectsApi()


def core_v1_api():
    from kubernetes import client

    _load_kube_config()
    return client.CoreV1Api()


def current_namespace(default: str = "kubeflow") -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as fh:
            return fh.read().strip() or default
    except OSError:
        return default


def _status(err: Exception) -> int | None:
    status = getattr(err, "status", None)
    return int(status) if status is not None else None


def _transient(err: Exception) -> bool:
    status = _status(err)
    # 404 right after create (informer lag), 409/429/5xx and connection errors: poll again.
    return status is None or status in (404, 409, 429) or status >= 500


def job_state(job: dict, succeeded: str = "Succeeded") -> tuple[str | None, str]:
    """(latest condition type whose status is True, its message); (None, "") before any.

    A terminal condition (Failed, or ``succeeded``: PyTorchJob's Succeeded, TrainJob's Complete)
    wins over any other still marked True; otherwise the controller's latest.
    """
    conditions = (job.get("status") or {}).get("conditions") or []
    true = [c for c in conditions if str(c.get("status")) == "True"]
    for terminal in ("Failed", succeeded):
        for c in true:
            if c.get("type") == terminal:
                return terminal, c.get("message") or c.get("reason") or ""
    if not true:
        return None, ""
    return true[-1].get("type"), true[-1].get("message") or ""


def wait_for_job(
    api,
    kind: JobKind,
    name: str,
    namespace: str,
    timeout_s: float = 24 * 3600,
    poll_s: float = 15.0,
    request_timeout_s: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Poll until success (return the job), Failed (raise JobFailed) or the JOB timeout."""
    deadline = clock() + timeout_s
    last_state: str | None = "<not seen>"
    while True:
        try:
            job = api.get_namespaced_custom_object(*kind.coordinates(namespace), name,
                                                   _request_timeout=request_timeout_s)
        except Exception as err:  # noqa: BLE001 - classified below
            if not _transient(err):
                raise
            if _status(err) == 404 and last_state != "<not seen>":
                raise JobFailed(f"{kind.kind} {namespace}/{name} was deleted while running") from err
            log.warning("%s %s/%s: poll failed (%s); retrying", kind.kind, namespace, name, err)
            job = None
        if job is not None:
            state, message = job_state(job, kind.succeeded)
            if state != last_state:
                log.info("%s %s/%s: %s %s", kind.kind, namespace, name, state or "Pending", message)
                last_state = state
            if state == kind.succeeded:
                return job
            if state == "Failed":
                raise JobFailed(f"{kind.kind} {namespace}/{name} failed: {message}")
        if clock() >= deadline:
            raise TimeoutError(
                f"{kind.kind} {namespace}/{name} not finished after {timeout_s:.0f}s (last state {last_state})"
            )
        sleep(poll_s)


TAIL_LINES = 40
MAX_EVENTS = 20


def diagnostics(core, kind: JobKind, name: str, namespace: str, tail_lines: int = TAIL_LINES) -> str:
    """The log tail of every pod of the job and the events of the job and its pods, as text.

    Best effort: what cannot be read is said in the text instead of raising.
    """
    parts = []
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{kind.pod_label}={name}").items
    except Exception as err:  # noqa: BLE001 - diagnostics must not mask the failure
        return f"(could not list the pods of {kind.kind} {namespace}/{name}: {err})"
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        pod_name = pod.metadata.name
        phase = getattr(pod.status, "phase", None) or "?"
        try:
            text = core.read_namespaced_pod_log(pod_name, namespace, container=kind.container,
                                                tail_lines=tail_lines) or ""
        except Exception as err:  # noqa: BLE001
            text = f"(no log: {err})"
        parts.append(f"--- pod {pod_name} ({phase}), last {tail_lines} lines ---\n{text.rstrip()}")
    events = []
    for involved in [name, *(p.metadata.name for p in pods)]:
        try:
            events += core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={involved}").items
        except Exception as err:  # noqa: BLE001
            parts.append(f"(could not list events of {involved}: {err})")
    if events:
        events.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
        lines = [f"{e.type or ''} {e.reason or ''} {e.involved_object.name}: {e.message or ''}".strip()
                 for e in events[-MAX_EVENTS:]]
        parts.append("--- events ---\n" + "\n".join(lines))
    return "\n".join(parts) or f"(no pods of {kind.kind} {namespace}/{name})"


def launcher_owner(env: dict[str, str] | None = None) -> dict | None:
    """An ownerReference to the launcher pod (KFP sets KFP_POD_NAME/KFP_POD_UID), else None."""
    env = os.environ if env is None else env
    pod, uid = env.get("KFP_POD_NAME"), env.get("KFP_POD_UID")
    if not (pod and uid):
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}


@contextlib.contextmanager
def cancel_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise JobCancelled in the waiting thread (main thread only)."""
    def _cancel(signum, _frame):
        raise JobCancelled(f"received {signal.Signals(signum).name}")

    with on_stop_signals(_cancel):
        yield


def delete_job(api, kind: JobKind, name: str, namespace: str, propagation: str = "Background") -> bool:
    """Delete the job (and, through owner references, its pods); False if it was already gone."""
    try:
        api.delete_namespaced_custom_object(*kind.coordinates(namespace), name, propagation_policy=propagation)
    except Exception as err:  # noqa: BLE001 - a 404 is "already gone"; anything else is reported
        if _status(err) == 404:
            return False
        raise
    log.info("deleted %s %s/%s", kind.kind, namespace, name)
    return True


def _delete_quietly(api, kind: JobKind, name: str, namespace: str) -> None:
    try:
        delete_job(api, kind, name, namespace)
    except Exception as err:  # noqa: BLE001 - cleanup must not mask the result
        log.warning("could not delete %s %s/%s: %s", kind.kind, namespace, name, err)


def _wait_gone(api, kind: JobKind, name: str, namespace: str, timeout_s: float, poll_s: float,
               clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    deadline = clock() + timeout_s
    while True:
        try:
            api.get_namespaced_custom_object(*kind.coordinates(namespace), name)
        except Exception as err:  # noqa: BLE001
            if _status(err) == 404:
                return
            if not _transient(err):
                raise
        if clock() >= deadline:
            raise TimeoutError(f"{kind.kind} {namespace}/{name} still exists {timeout_s:.0f}s after its deletion")
        sleep(poll_s)


def _adopt_owner(api, kind: JobKind, existing: dict, owner: dict | None) -> None:
    """Add the new launcher pod to an adopted job's owners, so the retry's pod owns it too."""
    meta = existing.get("metadata") or {}
    refs = list(meta.get("ownerReferences") or [])
    if owner is None or any(r.get("uid") == owner["uid"] for r in refs):
        return
    try:
        api.patch_namespaced_custom_object(*kind.coordinates(meta["namespace"]), meta["name"],
                                           {"metadata": {"ownerReferences": [*refs, owner]}})
    except Exception as err:  # noqa: BLE001 - ownership is a convenience, not a condition
        log.warning("could not add the launcher pod as owner of %s %s: %s", kind.kind, meta["name"], err)


def create_or_adopt(api, kind: JobKind, manifest: dict, *, poll_s: float = 5.0, gone_timeout_s: float = 600.0,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> str:
    """Create the job, or adopt one of the same name: "created" | "adopted" (running or done).

    A failed job of that name is deleted (foreground: its pods first) and created again.
    """
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    owners = manifest["metadata"].get("ownerReferences") or []
    for _ in range(3):  # create; on a conflict look at what is there
        try:
            api.create_namespaced_custom_object(*kind.coordinates(namespace), manifest)
            log.info("created %s %s/%s", kind.kind, namespace, name)
            return "created"
        except Exception as err:  # noqa: BLE001
            if _status(err) != 409:
                raise
        try:
            existing = api.get_namespaced_custom_object(*kind.coordinates(namespace), name)
        except Exception as err:  # noqa: BLE001 - deleted between create and get: create again
            if _status(err) == 404:
                continue
            raise
        state, message = job_state(existing, kind.succeeded)
        if state != "Failed":
            log.info("adopting %s %s/%s (%s) from an earlier attempt", kind.kind, namespace, name,
                     state or "Pending")
            _adopt_owner(api, kind, existing, owners[0] if owners else None)
            return "adopted"
        log.warning("%s %s/%s failed in an earlier attempt (%s): deleting it to start again",
                    kind.kind, namespace, name, message)
        delete_job(api, kind, name, namespace, propagation="Foreground")
        _wait_gone(api, kind, name, namespace, gone_timeout_s, poll_s, clock, sleep)
    raise RuntimeError(f"could not create {kind.kind} {namespace}/{name}: its name stays taken")


def run_job(
    manifest: dict,
    kind: JobKind,
    api=None,
    core=None,
    timeout_s: float = 24 * 3600,
    poll_s: float = 15.0,
    cleanup: str = "on_success",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Create (or adopt) the job, wait for it, delete it per ``cleanup``; return the job object.

    Failure and timeout raise with the pods' log tails and events (also logged for the task log).
    Cancel (SIGTERM/SIGINT) and timeout delete the job whatever ``cleanup`` says: nothing would
    wait for it any more.
    """
    if cleanup not in ("always", "on_success", "never"):
        raise ValueError(f"cleanup must be always|on_success|never, not {cleanup!r}")
    api = api or custom_objects_api()
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    delete = cleanup == "always"
    try:
        with cancel_on_signals():
            create_or_adopt(api, kind, manifest, poll_s=poll_s, clock=clock, sleep=sleep)
            try:
                job = wait_for_job(api, kind, name, namespace, timeout_s=timeout_s, poll_s=poll_s, clock=clock,
                                   sleep=sleep)
            except (JobFailed, TimeoutError) as err:
                timed_out = isinstance(err, TimeoutError)
                delete = delete or timed_out
                report = diagnostics(core or core_v1_api(), kind, name, namespace)
                log.error("%s\n%s", err, report)
                raise (TimeoutError if timed_out else JobFailed)(f"{err}\n{report}") from err
            delete = delete or cleanup == "on_success"
            return job
    except JobCancelled:
        log.warning("cancelled: deleting %s %s/%s", kind.kind, namespace, name)
        delete = True
        raise
    finally:
        if delete:
            _delete_quietly(api, kind, name, namespace)


def delete_run_jobs(run_id: str, namespace: str | None = None, api=None) -> list[str]:
    """Delete every training job (each registered kind) labelled with ``run_id``; their names.

    A kind whose CRD is not installed (404) or that the caller may not list (403) is skipped.
    """
    if not run_id:
        raise ValueError("delete_run_jobs needs a run id (an empty one would select every run's jobs)")
    api = api or custom_objects_api()
    namespace = namespace or current_namespace()
    deleted = []
    for kind in {k.plural: k for k in JOB_KINDS.values()}.values():
        try:
            items = api.list_namespaced_custom_object(*kind.coordinates(namespace),
                                                      label_selector=f"{RUN_ID_LABEL}={run_id}")["items"]
        except Exception as err:  # noqa: BLE001
            if _status(err) in (403, 404):
                log.info("skipping %s: %s", kind.plural, err)
                continue
            raise
        for item in items:
            if delete_job(api, kind, item["metadata"]["name"], namespace):
                deleted.append(item["metadata"]["name"])
    return deleted


def rbac_rules(kind: JobKind) -> list[dict]:
    """The Role rules run_job and delete_run_jobs need for ``kind``: exactly the calls they make."""
    return [
        # create, get (poll, adopt), list (delete_run_jobs), delete, patch (adopt: owner)
        {"apiGroups": [kind.group], "resources": [kind.plural],
         "verbs": ["create", "delete", "get", "list", "patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},  # diagnostics
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    ]


class ClusterBackend(Backend):
    """Builds a job object from the config and runs it with ``run_job``."""

    kind: ClassVar[JobKind]

    def __init__(self, config: ClusterJobConfig, api=None, core=None, owner: dict | None = None):
        super().__init__(config)
        self.api = api  # a CustomObjectsApi; None: from the cluster at launch
        self.core = core  # a CoreV1Api for logs and events; None: from the cluster when needed
        # None: the launcher pod from KFP's environment; never with cleanup "never" (the job
        # would vanish with the pod).
        self.owner = owner if owner is not None else (launcher_owner() if config.cleanup != "never" else None)

    @abstractmethod
    def build(self, args: list[str], name: str, namespace: str, owner: dict | None) -> dict:
        """The job object running the training program with ``args``."""

    def manifest(self, job: TrainJobSpec) -> dict:
        here = current_namespace()
        namespace = self.config.namespace or here
        # An owner reference reaches only within its namespace: the launcher pod's.
        owner = self.owner if namespace == here else None
        return self.build(job.program_args(), name=name_for(self.config, job), namespace=namespace, owner=owner)

    def run(self, job: TrainJobSpec) -> None:
        if not is_remote(job.out_dir):
            log.warning("out_dir %s is local: pods will write it on their own disk", job.out_dir)
        config = self.config
        run_job(self.manifest(job), self.kind, api=self.api, core=self.core, timeout_s=config.timeout_s,
                poll_s=config.poll_s, cleanup=config.cleanup)


def job_metadata(config: ClusterJobConfig, name: str, namespace: str, owner: dict | None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": config.job_labels()}
    if owner:
        meta["ownerReferences"] = [dict(owner)]
    return meta
