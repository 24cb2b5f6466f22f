"""Compile the pipeline for a cluster and check the YAML against the KFP protos."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import yaml

from musictext_kfp.images import AUDIO_IMAGE, IMAGE

log = logging.getLogger(__name__)

# Defaults baked into the cluster YAML (the pipeline function's own defaults are the demo's).
CLUSTER_DEFAULTS: dict[str, Any] = {
    "profile": "production",
    "train_launcher": "trainjob",  # Kubeflow Trainer v2; pytorchjob for Training Operator v1
    "gpus_per_node": 1,
}
# A Kubernetes object name (DNS subdomain).
SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# libyaml when PyYAML has it: ~0.03 s instead of ~0.24 s for the 80 KB compiled package.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class BucketSecretError(ValueError):
    """A malformed --bucket-secret, refused before anything is compiled or written."""


def compile_pipeline(
    output: str | Path,
    pipeline_root: str | None = None,
    image: str | None = None,
    parameters: dict[str, Any] | None = None,
    audio_image: str | None = None,
    pipeline_name: str = "musictext_pipeline",
    bucket_secret: str | None = None,
) -> Path:
    """Write the cluster form of a pipeline as YAML; ``parameters`` override the cluster defaults.
    ``pipeline_name``: ``musictext_pipeline`` or ``fanout_dry_run``. ``bucket_secret``
    ("NAME" or "NAME:KEY"): a Secret with the bucket's service-account key, mounted in every
    task and in the training jobs; only its name goes into the YAML."""
    from kfp import compiler

    from musictext_kfp.musictext_pipeline import cluster_pipeline

    secret, key = parse_bucket_secret(bucket_secret)
    pipeline = cluster_pipeline(pipeline_name, bucket_secret=secret, bucket_secret_key=key)
    inputs = pipeline.component_spec.inputs or {}
    params = {k: v for k, v in {**CLUSTER_DEFAULTS, **(parameters or {})}.items() if k in inputs}
    if image and "train_image" in inputs:
        params.setdefault("train_image", image)
    if secret and "train_options" in inputs:
        params["train_options"] = {"bucket_secret": secret, "bucket_secret_key": key,
                                   **params.get("train_options", {})}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(output), pipeline_parameters=params)
    # Images and the root are rewritten in the written file (KFP has no compile option for them).
    docs = load_pipeline_yaml(output)
    retag_images(docs[0], {IMAGE: image or IMAGE, AUDIO_IMAGE: audio_image or AUDIO_IMAGE})
    if pipeline_root:
        docs[0]["defaultPipelineRoot"] = pipeline_root
    output.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    validate_pipeline_docs(docs)
    log.info("wrote %s", output)
    return output


def parse_bucket_secret(value: str | None) -> tuple[str, str]:
    """``NAME[:KEY]`` as (name, key); ("", default key) for none."""
    from musictext.cluster import DEFAULT_BUCKET_SECRET_KEY

    name, _, key = (value or "").partition(":")
    if value and not SECRET_NAME.fullmatch(name):
        raise BucketSecretError(f"--bucket-secret: expected NAME[:KEY] with a Kubernetes Secret name "
                                f"(lower-case letters, digits, '-', '.'), got {value!r}")
    return name, key or DEFAULT_BUCKET_SECRET_KEY


def retag_images(spec: dict[str, Any], images: dict[str, str]) -> None:
    """Point every executor that runs one of ``images``' keys at its value."""
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor.get("container", {})
        if container.get("image") in images:
            container["image"] = images[container["image"]]


def load_pipeline_yaml(path: str | Path) -> list[dict[str, Any]]:
    """The documents of a compiled pipeline file: the PipelineSpec, then the PlatformSpec if any."""
    docs = [d for d in yaml.load_all(Path(path).read_text(), Loader=YAML_LOADER) if d]
    if not docs:
        raise ValueError(f"{path}: empty pipeline file")
    return docs


def validate_pipeline_yaml(path: str | Path) -> dict[str, Any]:
    """Parse the compiled file with the PipelineSpec/PlatformSpec protos; return a summary."""
    return validate_pipeline_docs(load_pipeline_yaml(path))


def validate_pipeline_docs(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Parse a compiled file's documents with the PipelineSpec/PlatformSpec protos; return a summary."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    summary: dict[str, Any] = {
        "name": spec.pipeline_info.name,
        "executors": sorted(spec.deployment_spec.fields["executors"].struct_value.fields),
        "platform_executors": [],
    }
    if len(docs) > 1:
        platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
        executors = platform.platforms["kubernetes"].deployment_spec.executors
        for name, struct in executors.items():
            json_format.ParseDict(
                json_format.MessageToDict(struct),
                kubernetes_executor_config_pb2.KubernetesExecutorConfig(),
            )
            summary["platform_executors"].append(name)
    return summary
