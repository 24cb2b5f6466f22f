"""Compile the pipeline for a cluster and check the YAML against the KFP protos."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

# Defaults baked into the cluster YAML (the pipeline function's own defaults are the demo's).
CLUSTER_DEFAULTS: dict[str, Any] = {
    "profile": "production",
    "train_launcher": "pytorchjob",
    "gpus_per_node": 1,
}


def load_pipeline(image: str | None = None, audio_image: str | None = None):
    """Import the DAG with the components' base images set (or the defaults).

    The images are read when the component modules are imported, so they are re-imported when
    different ones are asked for in the same process.
    """
    import importlib
    import sys

    from musictext.paths import ensure_repo_on_path

    if image:
        os.environ["MUSICTEXT_IMAGE"] = image
    if audio_image:
        os.environ["MUSICTEXT_AUDIO_IMAGE"] = audio_image
    ensure_repo_on_path()
    components = importlib.import_module("components")
    wanted = (
        os.environ.get("MUSICTEXT_IMAGE", default_image()),
        os.environ.get("MUSICTEXT_AUDIO_IMAGE", default_audio_image()),
    )
    if (components.IMAGE, components.AUDIO_IMAGE) != wanted:
        for name in [n for n in sys.modules if n == "components" or n.startswith(("components.", "pipelines."))]:
            del sys.modules[name]
    return importlib.import_module("pipelines.musictext_pipeline")


def default_image() -> str:
    from musictext import __version__

    return f"ghcr.io/musictext/musictext:{__version__}"


def default_audio_image() -> str:
    from musictext import __version__

    return f"ghcr.io/musictext/musictext-audio:{__version__}"


def compile_pipeline(
    output: str | Path,
    pipeline_root: str | None = None,
    image: str | None = None,
    parameters: dict[str, Any] | None = None,
    audio_image: str | None = None,
) -> Path:
    """Write the cluster pipeline YAML; ``parameters`` override the cluster defaults."""
    from kfp import compiler

    module = load_pipeline(image, audio_image)
    params = {**CLUSTER_DEFAULTS, **(parameters or {})}
    if image:
        params.setdefault("train_image", image)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    func = module.musictext_pipeline
    # Set (or clear) every time: the spec object lives as long as the imported module.
    func.pipeline_spec.default_pipeline_root = pipeline_root or ""
    compiler.Compiler().compile(func, str(output), pipeline_parameters=params)
    validate_pipeline_yaml(output)
    log.info("wrote %s", output)
    return output


def validate_pipeline_yaml(path: str | Path) -> dict[str, Any]:
    """Parse the compiled file with the PipelineSpec/PlatformSpec protos; return a summary."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    if not docs:
        raise ValueError(f"{path}: empty pipeline file")
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
