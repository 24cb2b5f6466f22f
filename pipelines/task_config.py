"""What a KFP TaskConfig forwards to the training job, as launch-config fields (C1 names).

KFP (2.17+) fills a component's ``dsl.TaskConfig`` parameter with the pod settings of its
task, for the passthrough fields the component declares; a task that launches a job copies them
there instead of using them itself. Free of kfp: the train component imports it at run time,
where kfp's authoring API is absent.
"""

from __future__ import annotations

from typing import Any

from musictext.cluster import GPU_RESOURCE


def launch_fields(
    resources: dict[str, Any] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The fields of a ClusterJobConfig that ``resources`` (a Kubernetes ResourceRequirements),
    ``tolerations`` and ``node_selector`` set; empty ones are left out so they keep the job's
    own values. The GPU count is left out of requests/limits: it travels as gpus_per_node, which
    the launchers turn into the per-node GPU limit."""
    fields: dict[str, Any] = {}
    if node_selector:
        fields["node_selector"] = {str(k): str(v) for k, v in node_selector.items()}
    if tolerations:
        fields["tolerations"] = [dict(t) for t in tolerations]
    for kind in ("requests", "limits"):
        amounts = {name: str(value) for name, value in ((resources or {}).get(kind) or {}).items()
                   if name != GPU_RESOURCE}
        if amounts:
            fields[kind] = amounts
    return fields
