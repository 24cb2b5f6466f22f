"""The cluster-side tasks: the train task's launch config (knobs, TaskConfig, train_options,
run identity, seed) and the exit task that deletes a run's training jobs."""

from types import SimpleNamespace

import pytest
from kfp import dsl, local

import musictext.train.launch as launch
from musictext_kfp.components.cleanup_jobs import cleanup_jobs
from musictext_kfp.components.train import train
from musictext_kfp.task_config import launch_fields


def test_task_config_becomes_launch_fields():
    fields = launch_fields(
        resources={"limits": {"nvidia.com/gpu": "2", "memory": "64Gi"}, "requests": {"cpu": 8, "memory": "60Gi"}},
        tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        node_selector={"pool": "a100"},
    )
    # The GPU count stays with gpus_per_node; quantities become strings.
    assert fields == {"node_selector": {"pool": "a100"},
                      "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
                      "requests": {"cpu": "8", "memory": "60Gi"}, "limits": {"memory": "64Gi"}}
    assert launch_fields() == launch_fields({"limits": {"nvidia.com/gpu": "1"}}, [], {}) == {}


@pytest.fixture
def launched(monkeypatch):
    """Run the train component's body with the launch captured instead of training."""
    calls = {}

    def fake_run_train_task(config, **kwargs):
        calls.update(config=config, **kwargs)
        return {"steps": 3}

    monkeypatch.setattr(launch, "run_train_task", fake_run_train_task)

    def run(launcher="trainjob", task_config=None, train_options=None, **more):
        args = dict(family="muq", profile="demo", stage=1, epochs_stage1=2, epochs_stage2=0, batch_size=0,
                    seed=11, text=None, targets=None, model=SimpleNamespace(metadata={}), launcher=launcher,
                    nnodes=2, nproc_per_node=1, gpus_per_node=1, node_selector={"pool": "default"},
                    train_image="registry.local/mt:1", timeout_minutes=30,
                    task_config=task_config or dsl.TaskConfig(), train_options=train_options or {},
                    run_id="run-1", task_id="42")
        train.python_func(**{**args, **more})
        return calls

    return run


def test_train_launch_config_layers(launched):
    calls = launched(
        task_config=dsl.TaskConfig(node_selector={"pool": "a100"}, resources={"requests": {"cpu": "4"}},
                                   tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]),
        train_options={"requests": {"memory": "32Gi"}, "shm_size": "16Gi", "namespace": "ml"},
    )
    config = calls["config"]
    assert config.launcher == "trainjob"
    assert (config.nnodes, config.gpus_per_node, config.image) == (2, 1, "registry.local/mt:1")
    assert config.node_selector == {"pool": "a100"}  # TaskConfig over the pipeline knob
    assert config.tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert config.requests == {"cpu": "4", "memory": "32Gi"}  # train_options merged in
    assert (config.shm_size, config.namespace, config.timeout_s) == ("16Gi", "ml", 1800)
    assert (config.run_id, config.task_id) == ("run-1", "42")
    # The pipeline's seed is the training seed.
    assert calls["overrides"] == {"train": {"stage1": {"epochs": 2}, "seed": 11}}


def test_train_options_override_task_config(launched):
    calls = launched(task_config=dsl.TaskConfig(node_selector={"pool": "a100"}),
                     train_options={"node_selector": {"pool": "h100"}})
    assert calls["config"].node_selector == {"pool": "h100"}


def test_local_launcher_ignores_cluster_fields(launched):
    calls = launched(launcher="local", nnodes=1, train_options={"shm_size": "16Gi"})
    assert calls["config"].launcher == "local" and not hasattr(calls["config"], "shm_size")


def test_a_field_no_launcher_has_fails(launched):
    with pytest.raises(TypeError, match="shm_sise"):
        launched(train_options={"shm_sise": "16Gi"})


def test_cleanup_deletes_the_runs_jobs_in_their_namespace(monkeypatch):
    seen = []
    monkeypatch.setattr(launch, "delete_run_jobs",
                        lambda run_id, namespace=None: seen.append((run_id, namespace)) or ["job-a"])
    assert cleanup_jobs.python_func(run_id="r1", launcher="trainjob", train_options={"namespace": "ml"}) == ["job-a"]
    assert cleanup_jobs.python_func(run_id="r2", launcher="pytorchjob", train_options={}) == ["job-a"]
    assert seen == [("r1", "ml"), ("r2", None)]


@pytest.mark.parametrize("launcher", ["local", "trainjob"])
def test_cleanup_never_fails_the_run(kfp_local, monkeypatch, tmp_path, launcher):
    """Through kfp.local: nothing to do for the local launcher; no cluster reachable is logged."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    assert cleanup_jobs(run_id="12345678", launcher=launcher, train_options={}).output == []


@pytest.mark.slow
def test_cluster_form_runs_through_kfp_local(tmp_path):
    """The compiled form (exit handler, retries, TaskConfig passthroughs) still runs as a
    whole with kfp.local and the local launcher: its exit task finds no jobs and the run succeeds."""
    import json
    from pathlib import Path

    from musictext_kfp.musictext_pipeline import cluster_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=True)
    # The smallest corpus whose splits evaluate (as tests/test_local_e2e.py's), in one shard.
    cluster_pipeline()(corpus_size=40, shard_size=40, clip_seconds=4.0, families=["muq"], epochs_stage1=1,
                       epochs_stage2=1, batch_size=8, train_options={"shm_size": "16Gi"})
    (run,) = Path(tmp_path).iterdir()
    cleanup = json.loads((run / "cleanup-jobs" / "executor_output.json").read_text())
    assert cleanup["parameterValues"]["Output"] == []
    assert (run / "report" / "run" / "report.html").is_file()
