"""A stand-in for the two Kubernetes APIs the cluster launchers call (CustomObjectsApi for the
jobs, CoreV1Api for their pods' logs and events), with the API server's answers that matter to
them: 409 on a taken name, 404 on a missing object, label selectors, and scripted job conditions.

It records every call as (resource, verb), so a test can check the launcher's RBAC rules against
what it really calls. Errors are kubernetes' own ApiException; pods and events its own models.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from kubernetes.client import (
    CoreV1Event,
    CoreV1EventList,
    V1ObjectMeta,
    V1ObjectReference,
    V1Pod,
    V1PodList,
    V1PodStatus,
)
from kubernetes.client.exceptions import ApiException


class FakeClock:
    """A monotonic clock whose sleep advances it: a job timeout without waiting for it."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def cond(kind: str, status: str = "True", message: str = "") -> dict:
    return {"type": kind, "status": status, "message": message}


class FakeCluster:
    """Jobs keyed by (plural, namespace, name). Each get of a job advances its conditions along
    ``script[name]`` (the last entry repeats); ``on_create(cluster, body)`` plays the controller."""

    def __init__(self, default_script: list[list[dict]] | None = None,
                 on_create: Callable[[FakeCluster, dict], None] | None = None):
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.script: dict[str, list[list[dict]]] = {}
        self.default_script = default_script or []
        self.on_create = on_create
        self.pods: dict[str, list[tuple[str, str, str]]] = {}  # job name -> [(pod, phase, log)]
        self.events: list[tuple[str, str, str, str]] = []  # (involved name, type, reason, message)
        self.calls: list[tuple[str, str]] = []  # (resource, verb)
        self.request_timeouts: list[float | None] = []  # each job get's _request_timeout
        self.log_containers: list[str | None] = []  # each log read's container
        self.created: list[dict] = []
        self.deleted: list[tuple[str, str | None]] = []  # (name, propagation policy)
        self.hook_on_get: Callable[[str], None] | None = None

    # -- CustomObjectsApi -------------------------------------------------------------------------
    def add(self, body: dict, conditions: list[dict] | None = None) -> None:
        """An object that exists before the launcher runs (e.g. from an earlier attempt)."""
        body = copy.deepcopy(body)
        if conditions is not None:
            body["status"] = {"conditions": conditions}
        meta = body["metadata"]
        self.objects[(self._plural(body), meta["namespace"], meta["name"])] = body

    @staticmethod
    def _plural(body: dict) -> str:
        return body["kind"].lower() + "s"

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append((plural, "create"))
        key = (plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        stored = copy.deepcopy(body)
        self.objects[key] = stored
        self.created.append(copy.deepcopy(body))
        self.script.setdefault(body["metadata"]["name"], copy.deepcopy(self.default_script))
        if self.on_create:
            self.on_create(self, stored)
        return stored

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, _request_timeout=None):
        self.calls.append((plural, "get"))
        self.request_timeouts.append(_request_timeout)
        if self.hook_on_get:
            self.hook_on_get(name)
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise ApiException(status=404, reason="NotFound")
        steps = self.script.get(name)
        if steps:
            obj["status"] = {"conditions": steps.pop(0) if len(steps) > 1 else steps[0]}
        return copy.deepcopy(obj)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, propagation_policy=None):
        self.calls.append((plural, "delete"))
        if self.objects.pop((plural, namespace, name), None) is None:
            raise ApiException(status=404, reason="NotFound")
        self.script.pop(name, None)
        self.deleted.append((name, propagation_policy))

    def list_namespaced_custom_object(self, group, version, namespace, plural, label_selector=""):
        self.calls.append((plural, "list"))
        key, _, value = label_selector.partition("=")
        items = [copy.deepcopy(o) for (p, ns, _), o in self.objects.items()
                 if p == plural and ns == namespace and o["metadata"].get("labels", {}).get(key) == value]
        return {"items": items}

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append((plural, "patch"))
        obj = self.objects[(plural, namespace, name)]
        obj["metadata"].update(copy.deepcopy(body["metadata"]))
        return copy.deepcopy(obj)

    # -- CoreV1Api --------------------------------------------------------------------------------
    def list_namespaced_pod(self, namespace, label_selector=""):
        self.calls.append(("pods", "list"))
        job = label_selector.partition("=")[2]
        return V1PodList(items=[V1Pod(metadata=V1ObjectMeta(name=pod, namespace=namespace), status=V1PodStatus(phase=phase))
                                for pod, phase, _ in self.pods.get(job, [])])

    def read_namespaced_pod_log(self, name, namespace, container=None, tail_lines=None):
        self.calls.append(("pods/log", "get"))
        self.log_containers.append(container)
        text = next(log for pods in self.pods.values() for pod, _, log in pods if pod == name)
        lines = text.splitlines()
        return "\n".join(lines[-tail_lines:] if tail_lines else lines)

    def list_namespaced_event(self, namespace, field_selector=""):
        self.calls.append(("events", "list"))
        name = field_selector.partition("=")[2]
        return CoreV1EventList(items=[
            CoreV1Event(metadata=V1ObjectMeta(name=f"{who}.{i}"), involved_object=V1ObjectReference(name=who),
                        type=kind, reason=reason, message=message)
            for i, (who, kind, reason, message) in enumerate(self.events) if who == name])
