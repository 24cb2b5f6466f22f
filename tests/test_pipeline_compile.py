"""The pipeline compiles to YAML that the KFP protos accept, with the cluster wiring in place."""

from __future__ import annotations

import yaml
import pytest

from musictext_kfp.cli import main as cli_main
from musictext_kfp.compile import CLUSTER_DEFAULTS, compile_pipeline, validate_pipeline_yaml
from musictext_kfp.fanout import MAX_FANOUT
from musictext_kfp.images import AUDIO_IMAGE, IMAGE
from musictext.cluster import BUCKET_SECRET_DIR as BUCKET_SECRET_MOUNT
from musictext_kfp.musictext_pipeline import RETRIES


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("build") / "musictext.yaml"
    compile_pipeline(path, pipeline_root="gs://bucket/musictext")
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return path, spec, platform


def dag_with(spec: dict, task_name: str) -> dict:
    """The tasks of the DAG (root, exit handler's or a loop's) that holds ``task_name``."""
    for comp in [spec["root"], *spec["components"].values()]:
        tasks = comp.get("dag", {}).get("tasks", {})
        if task_name in tasks:
            return tasks
    raise KeyError(task_name)


def executor_of(spec: dict, task_name: str) -> str:
    """Find the executor of a task wherever it sits (root DAG or a sub-DAG)."""
    comp_ref = dag_with(spec, task_name)[task_name]["componentRef"]["name"]
    return spec["components"][comp_ref]["executorLabel"]


def k8s_executors(platform: dict) -> dict:
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_parses_with_protos(compiled):
    path, _, _ = compiled
    summary = validate_pipeline_yaml(path)
    assert summary["name"] == "musictext"
    assert "exec-embed-audio" in summary["platform_executors"]


def test_stages_present_in_order(compiled):
    _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    for stage in ("check-params", "list-sources", "download", "clip", "embed-audio", "merge-shards",
                  "gather-targets", "prepare-text", "train", "evaluate", "export", "report", "cleanup-jobs"):
        assert f"exec-{stage}" in executors, stage
    # Two training stages: stage 2 depends on stage 1's model.
    loop = next(c for c in spec["components"].values()
                if "train-2" in c.get("dag", {}).get("tasks", {}))
    stage2 = loop["dag"]["tasks"]["train-2"]
    assert "train" in stage2["dependentTasks"]
    assert stage2["inputs"]["artifacts"]["init"]["taskOutputArtifact"]["producerTask"] == "train"


def test_fan_out_uses_parallel_for(compiled):
    _, spec, _ = compiled
    run_tasks = dag_with(spec, "list-sources")
    loops = [t for t in run_tasks.values() if "parameterIterator" in t]
    assert len(loops) == 2  # shards (download, clip, embed) and families
    shard_loop = next(t for t in loops if "list-sources" in t.get("dependentTasks", []))
    assert shard_loop["iteratorPolicy"]["parallelismLimit"] == 8
    # The listing cuts at most MAX_FANOUT shards, after every parameter was checked.
    listing = run_tasks["list-sources"]
    assert listing["inputs"]["parameters"]["max_fanout"]["runtimeValue"]["constant"] == MAX_FANOUT
    assert "check-params" in listing["dependentTasks"]
    checked = run_tasks["check-params"]["inputs"]["parameters"]
    assert set(checked) - {"listing_only"} == set(spec["root"]["inputDefinitions"]["parameters"]), \
        "every parameter is checked"
    assert checked["listing_only"]["runtimeValue"]["constant"] is False
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
    # Only the embedding step asks for the GPU pool (training asks through its job).
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
    assert params["train_launcher"]["defaultValue"] == "trainjob"
    assert params["train_options"]["defaultValue"] == {}
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
    assert {"exec-check-params", "exec-list-sources", "exec-check-shard"} <= set(executors)
    # No training, so no jobs to clean up; nothing is retried.
    assert "exec-download" not in executors and "exec-cleanup-jobs" not in executors
    assert "retryPolicy" not in out.read_text()


def test_exit_handler_deletes_the_runs_jobs(compiled):
    """The DAG runs inside an exit handler whose task, after success, failure or cancel, deletes
    the training jobs labelled with this run's id (never from the cache)."""
    _, spec, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"cleanup-jobs", "exit-handler-1"}
    cleanup = root["cleanup-jobs"]
    assert cleanup["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert cleanup["dependentTasks"] == ["exit-handler-1"]
    assert cleanup["cachingOptions"] == {}  # caching off
    inputs = cleanup["inputs"]["parameters"]
    assert inputs["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert inputs["launcher"]["componentInputParameter"] == "train_launcher"
    assert inputs["train_options"]["componentInputParameter"] == "train_options"
    assert "report" in spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]


@pytest.mark.parametrize("task", ["train", "train-2"])
def test_train_task_identity_seed_options_and_passthroughs(compiled, task):
    _, spec, platform = compiled
    inputs = dag_with(spec, task)[task]["inputs"]["parameters"]
    assert inputs["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert inputs["task_id"]["runtimeValue"]["constant"] == "{{$.pipeline_task_uuid}}"
    assert inputs["seed"]["componentInputParameter"] == "pipelinechannel--seed"
    assert inputs["train_options"]["componentInputParameter"] == "pipelinechannel--train_options"
    comp = spec["components"][dag_with(spec, task)[task]["componentRef"]["name"]]
    assert comp["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
    # Placement goes to the job (not this launcher pod); env and volumes apply to the pod too.
    passthroughs = {p["field"]: p.get("applyToTask", False) for p in comp["taskConfigPassthroughs"]}
    assert passthroughs == {"RESOURCES": False, "KUBERNETES_NODE_SELECTOR": False,
                            "KUBERNETES_TOLERATIONS": False, "ENV": True, "KUBERNETES_VOLUMES": True}
    k8s = k8s_executors(platform)[executor_of(spec, task)]
    assert k8s["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith("gpu_node_selector")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]


def test_retries_on_the_preemptible_steps_only(compiled):
    _, spec, _ = compiled
    retried = {}
    for comp in spec["components"].values():
        for name, task in comp.get("dag", {}).get("tasks", {}).items():
            if "retryPolicy" in task:
                retried[name] = task["retryPolicy"]
    assert set(retried) == {"download", "embed-audio", "train", "train-2"}
    for name, policy in retried.items():
        want = RETRIES[name.removesuffix("-2")]
        assert policy["maxRetryCount"] == want.retries
        assert policy["backoffDuration"] == want.backoff and policy["backoffFactor"] == want.factor


def test_bucket_secret_in_every_task_by_name_only(tmp_path):
    out = tmp_path / "p.yaml"
    assert cli_main(["compile", "--output", str(out), "--bucket-secret", "mt-bucket:sa.json",
                     "--train-options", "requests.cpu=8", "--train-options", "shm_size=16Gi"]) == 0
    text = out.read_text()
    spec, platform = list(yaml.safe_load_all(text))
    executors = spec["deploymentSpec"]["executors"]
    k8s = k8s_executors(platform)
    assert set(k8s) == set(executors)  # every task
    for name, executor in executors.items():
        (mount,) = k8s[name]["secretAsVolume"]
        assert (mount["secretName"], mount["mountPath"], mount["optional"]) == ("mt-bucket", BUCKET_SECRET_MOUNT, False)
        assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{BUCKET_SECRET_MOUNT}/sa.json"} in \
            executor["container"]["env"], name
    # The training jobs mount it too (their launch config), merged with the options given.
    options = spec["root"]["inputDefinitions"]["parameters"]["train_options"]["defaultValue"]
    assert options == {"bucket_secret": "mt-bucket", "bucket_secret_key": "sa.json",
                       "requests": {"cpu": "8"}, "shm_size": "16Gi"}
    # The Secret by name: nothing of a Secret object or its data is in the file.
    assert "kind: Secret" not in text and "stringData" not in text
    assert text.count("mt-bucket") == 2 * len(executors) + 1  # secretName + its parameter, + the option


def test_bad_bucket_secret_is_refused(tmp_path):
    assert cli_main(["compile", "--output", str(tmp_path / "p.yaml"), "--bucket-secret", "Not_A/Name"]) == 2
    assert not (tmp_path / "p.yaml").exists()


def test_no_bucket_secret_no_mount(compiled):
    _, spec, platform = compiled
    assert not any("secretAsVolume" in e for e in k8s_executors(platform).values())
    assert not any(e["container"].get("env") for e in spec["deploymentSpec"]["executors"].values())


def test_train_options_nest_dotted_fields():
    from musictext_kfp.cli import build_parser, pipeline_params

    args = build_parser().parse_args([
        "run", "--local", "--train-options", "requests.cpu=8", "--train-options", "requests.memory=32Gi",
        "--train-options", "shm_size=16Gi", "--train-options", "labels.team.name=ml",
        "--train-options", 'tolerations=[{"key": "spot", "operator": "Exists"}]',
    ])
    assert pipeline_params(args)["train_options"] == {
        "requests": {"cpu": "8", "memory": "32Gi"}, "shm_size": "16Gi", "labels": {"team": {"name": "ml"}},
        "tolerations": [{"key": "spot", "operator": "Exists"}]}
    for bad in (["requests.=8"], ["shm_size=16Gi", "shm_size.x=1"], ["tolerations=[oops"]):
        args = build_parser().parse_args(["run", "--local", *[f"--train-options={b}" for b in bad]])
        with pytest.raises(SystemExit):
            pipeline_params(args)


def test_launcher_choices():
    from musictext.train.launch import launchers
    from musictext_kfp.cli import CHOICES, build_parser

    assert sorted(CHOICES["train_launcher"]) == launchers() == ["local", "pytorchjob", "trainjob"]
    for launcher in ("local", "trainjob", "pytorchjob"):
        assert build_parser().parse_args(["compile", "--train-launcher", launcher]).train_launcher == launcher
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compile", "--train-launcher", "slurm"])
