"""The pipeline compiles to YAML that the KFP protos accept, with the cluster wiring in place."""

from __future__ import annotations

import yaml
import pytest

from musictext_kfp.cli import main as cli_main
from musictext_kfp.compile import CLUSTER_DEFAULTS, compile_pipeline, validate_pipeline_yaml
from musictext_kfp.images import AUDIO_IMAGE, IMAGE


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("build") / "musictext.yaml"
    compile_pipeline(path, pipeline_root="gs://bucket/musictext")
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return path, spec, platform


def executor_of(spec: dict, task_name: str) -> str:
    """Find the executor of a task wherever it sits (root DAG or a loop's sub-DAG)."""
    for comp in [spec["root"], *spec["components"].values()]:
        tasks = comp.get("dag", {}).get("tasks", {})
        if task_name in tasks:
            comp_ref = tasks[task_name]["componentRef"]["name"]
            return spec["components"][comp_ref]["executorLabel"]
    raise KeyError(task_name)


def test_parses_with_protos(compiled):
    path, _, _ = compiled
    summary = validate_pipeline_yaml(path)
    assert summary["name"] == "musictext"
    assert "exec-embed-audio" in summary["platform_executors"]


def test_stages_present_in_order(compiled):
    _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    for stage in ("list-sources", "download", "clip", "embed-audio", "merge-shards",
                  "gather-targets", "prepare-text", "train", "evaluate", "export", "report"):
        assert f"exec-{stage}" in executors, stage
    # Two training stages: stage 2 depends on stage 1's model.
    loop = next(c for c in spec["components"].values()
                if "train-2" in c.get("dag", {}).get("tasks", {}))
    stage2 = loop["dag"]["tasks"]["train-2"]
    assert "train" in stage2["dependentTasks"]
    assert stage2["inputs"]["artifacts"]["init"]["taskOutputArtifact"]["producerTask"] == "train"


def test_fan_out_uses_parallel_for(compiled):
    _, spec, _ = compiled
    root_tasks = spec["root"]["dag"]["tasks"]
    loops = [t for t in root_tasks.values() if "parameterIterator" in t]
    assert len(loops) == 2  # shards (download, clip, embed) and families
    shard_loop = next(t for t in loops if "list-sources" in t.get("dependentTasks", []))
    assert shard_loop["iteratorPolicy"]["parallelismLimit"] == 8
    # One audio-embedding task per shard, inside the shard loop, fed by that shard's clips.
    body = spec["components"][shard_loop["componentRef"]["name"]]["dag"]["tasks"]
    assert {"download", "clip", "embed-audio"} <= set(body)
    clips_in = body["embed-audio"]["inputs"]["artifacts"]["clips"]["taskOutputArtifact"]
    assert clips_in["producerTask"] == "clip"


def test_embedding_on_gpu_pool(compiled):
    _, spec, platform = compiled
    exec_label = executor_of(spec, "embed-audio")
    container = spec["deploymentSpec"]["executors"][exec_label]["container"]
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][exec_label]
    assert k8s["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith(
        "gpu_node_selector"
    )
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s[
        "tolerations"
    ]
    # Only the embedding step asks for the GPU pool (training asks through its PyTorchJob).
    gpu_execs = [
        name for name, ex in spec["deploymentSpec"]["executors"].items()
        if ex["container"].get("resources", {}).get("accelerator")
    ]
    assert gpu_execs == [exec_label]


def test_images_and_cluster_defaults(compiled):
    _, spec, _ = compiled
    audio_exec = executor_of(spec, "embed-audio")
    for name, ex in spec["deploymentSpec"]["executors"].items():
        # The audio step has its own image (transformers<5 for MuQ-MuLan); the rest the main one.
        want = AUDIO_IMAGE if name == audio_exec else IMAGE
        assert ex["container"]["image"] == want, name
        # The image ships kfp: nothing is pip-installed at run time.
        assert "pip install" not in " ".join(ex["container"]["command"]), name
    params = spec["root"]["inputDefinitions"]["parameters"]
    for knob in ("sources", "corpus_size", "epochs_stage1", "epochs_stage2", "batch_size",
                 "gpu_node_selector", "train_nodes", "gpus_per_node", "profile"):
        assert knob in params, knob
    assert params["profile"]["defaultValue"] == CLUSTER_DEFAULTS["profile"]
    assert params["train_launcher"]["defaultValue"] == "pytorchjob"
    assert spec["defaultPipelineRoot"] == "gs://bucket/musictext"


def test_cli_compile_overrides(tmp_path, monkeypatch):
    out = tmp_path / "p.yaml"
    rc = cli_main([
        "compile", "--output", str(out), "--image", "registry.local/mt:1",
        "--audio-image", "registry.local/mt-audio:1",
        "--gpu-node-selector", "pool=a100", "--train-nodes", "4", "--corpus-size", "1000",
        # every flag the Helm registration hook passes (charts/musictext/files/register-pipeline.sh)
        "--pipeline-root", "gs://acme/mt", "--procs-per-node", "2", "--gpus-per-node", "2",
    ])
    assert rc == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.local/mt:1", "registry.local/mt-audio:1"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["gpu_node_selector"]["defaultValue"] == {"pool": "a100"}
    assert params["train_nodes"]["defaultValue"] == 4
    assert params["train_image"]["defaultValue"] == "registry.local/mt:1"
    assert params["procs_per_node"]["defaultValue"] == 2
    assert params["gpus_per_node"]["defaultValue"] == 2
    assert spec["defaultPipelineRoot"] == "gs://acme/mt"


def test_default_image_restored_after_override(tmp_path):
    cli_main(["compile", "--output", str(tmp_path / "o.yaml"), "--image", "registry.local/mt:2",
              "--pipeline-root", "gs://elsewhere/mt"])
    out = compile_pipeline(tmp_path / "p.yaml")
    spec = next(yaml.safe_load_all(out.read_text()))
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {IMAGE, AUDIO_IMAGE}
    assert "defaultPipelineRoot" not in spec, "a compile never carries an earlier pipeline root over"


def test_clip_format_choices_match_the_clip_stage():
    """The CLI, the pipeline default and the clip stage name the same clip formats."""
    import argparse
    import inspect

    from musictext_kfp.cli import add_pipeline_args
    from musictext.clip.cut import CLIP_FORMATS, DEFAULT_CLIP_FORMAT
    from musictext_kfp.musictext_pipeline import musictext_pipeline

    parser = argparse.ArgumentParser()
    add_pipeline_args(parser)
    action = next(a for a in parser._actions if a.dest == "clip_format")
    assert sorted(action.choices) == sorted(CLIP_FORMATS)
    default = inspect.signature(musictext_pipeline.pipeline_func).parameters["clip_format"].default
    assert default == DEFAULT_CLIP_FORMAT


def test_every_pipeline_parameter_has_an_option_with_help():
    """The CLI options come from the pipeline function: one per parameter, its docstring as help."""
    import argparse

    from musictext_kfp.cli import add_pipeline_args
    from musictext_kfp.musictext_pipeline import musictext_pipeline

    parser = argparse.ArgumentParser()
    add_pipeline_args(parser)
    actions = {a.dest: a for a in parser._actions}
    for name, spec in musictext_pipeline.component_spec.inputs.items():
        assert name in actions, f"no option for pipeline parameter {name}"
        assert f"--{name.replace('_', '-')}" in actions[name].option_strings
        assert spec.description, f"{name}: no description in the pipeline docstring's Args:"
        assert " ".join(spec.description.split()) in actions[name].help
        assert actions[name].default is None  # unset options keep the pipeline's default


def test_cli_parses_list_and_dict_parameters():
    from musictext_kfp.cli import build_parser, pipeline_params

    args = build_parser().parse_args([
        "run", "--local", "--sources", "synthetic, other", "--families", "muq,mert",
        "--gpu-node-selector", "pool=a100", "--gpu-node-selector", "zone=b", "--clip-seconds", "4",
    ])
    assert pipeline_params(args) == {
        "sources": ["synthetic", "other"], "families": ["muq", "mert"],
        "gpu_node_selector": {"pool": "a100", "zone": "b"}, "clip_seconds": 4.0,
    }
    for bad in (["--families", "muq,nope"], ["--gpu-node-selector", "novalue"], ["--clip-format", "mp3"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "--local", *bad])


def test_source_options_nest_by_source():
    from musictext_kfp.cli import build_parser, pipeline_params

    args = build_parser().parse_args([
        "run", "--local", "--sources", "musiccaps,jamendo", "--source-options", "musiccaps.metadata=/data/mc",
        "--source-options", "jamendo.split=2", "--source-options", "musiccaps.requests_per_second=0.5",
        "--folder", "/music",
    ])
    assert pipeline_params(args)["source_options"] == {
        "musiccaps": {"metadata": "/data/mc", "requests_per_second": "0.5"}, "jamendo": {"split": "2"}}
    assert pipeline_params(args)["folder"] == "/music"
    with pytest.raises(SystemExit, match="SOURCE.OPTION=VALUE"):
        pipeline_params(build_parser().parse_args(["run", "--local", "--source-options", "metadata=/x"]))


def test_dry_run_compiles_with_only_the_listing_parameters(tmp_path):
    import yaml

    from musictext_kfp.cli import main

    out = tmp_path / "dry.yaml"
    assert main(["compile", "--dry-run", "--output", str(out), "--sources", "musiccaps", "--shard-size", "5"]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"sources", "source_options", "folder", "corpus_size", "shard_size", "seed"}
    assert params["shard_size"]["defaultValue"] == 5
    executors = spec["deploymentSpec"]["executors"]
    assert {"exec-list-sources", "exec-check-shard"} <= set(executors) and "exec-download" not in executors
