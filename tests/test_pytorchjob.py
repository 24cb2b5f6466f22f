"""The launch configs, PyTorchJob manifests against the CRD schema, and the shared wait logic
(musictext.train.launch.cluster) against a fake API. Adoption, cancel, failure reports and RBAC
of both cluster backends: tests/test_trainjob.py."""

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from musictext.config import load_family_config
from musictext.train.launch import (
    PYTORCHJOB,
    JobFailed,
    LocalConfig,
    PyTorchJobBackend,
    PyTorchJobConfig,
    TrainJobSpec,
    build_pytorchjob,
    launch,
    launch_config,
    run_job,
    run_train_task,
    wait_for_job,
)
from tests.fake_k8s import FakeClock, FakeCluster, cond
from tests.k8s_schemas import crd_validator


@pytest.fixture(scope="module")
def validator():
    return crd_validator("kubeflow.org/v1", "PyTorchJob")


def _manifest(**kw):
    options = dict(
        image="registry/musictext:1", nnodes=3, nproc_per_node=4, gpus_per_node=4,
        node_selector={"pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        service_account="trainer", env={"HF_HUB_OFFLINE": "1"}, requests={"cpu": "8", "memory": "32Gi"},
        limits={"memory": "32Gi"},
        ttl_seconds_after_finished=3600,
    )
    options.update(kw)
    return build_pytorchjob(PyTorchJobConfig(**options), ["--family", "muq", "--stage", "1", "--out-dir", "gs://b/out"],
                            name="musictext-muq-s1-abc123", namespace="team")


def test_manifest_validates_and_has_the_operator_contract(validator):
    m = _manifest()
    errors = sorted(validator.iter_errors(m), key=str)
    assert not errors, [e.message for e in errors]
    spec = m["spec"]
    assert m["apiVersion"] == "kubeflow.org/v1" and m["kind"] == "PyTorchJob"
    assert spec["nprocPerNode"] == "4"
    assert spec["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert spec["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    pod = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "pytorch"
    assert container["command"][0] == "torchrun"
    # torchrun takes nnodes/rank/master from the operator's PET_* env, not from flags
    assert not any(a.startswith("--nnodes") or a.startswith("--master") for a in container["command"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["serviceAccountName"] == "trainer"
    assert spec["runPolicy"]["backoffLimit"] == 0 and spec["runPolicy"]["cleanPodPolicy"] == "Running"
    assert spec["runPolicy"]["activeDeadlineSeconds"] == 24 * 3600  # the launcher's timeout by default
    assert spec["runPolicy"]["ttlSecondsAfterFinished"] == 3600
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_single_node_has_no_workers(validator):
    m = _manifest(nnodes=1, gpus_per_node=0, node_selector={}, tolerations=None)
    validator.validate(m)
    assert set(m["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    pod = m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "tolerations" not in pod and "nodeSelector" not in pod  # no GPUs: no GPU-pool toleration
    container = pod["containers"][0]
    assert container["resources"] == {"limits": {"memory": "32Gi"}, "requests": {"cpu": "8", "memory": "32Gi"}}
    assert "imagePullPolicy" not in container
    assert _manifest(image_pull_policy="Always")["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
        "containers"][0]["imagePullPolicy"] == "Always"


def test_schema_rejects_broken_manifests(validator):
    bad = _manifest()
    bad["spec"]["nprocPerNode"] = 4  # must be a string
    assert not validator.is_valid(bad)
    typo = copy.deepcopy(_manifest())
    typo["spec"]["runPolicy"]["backofLimit"] = 1
    assert not validator.is_valid(typo)


# -- launch configs and the job spec -------------------------------------------------------------
def test_launch_configs_reject_bad_values_with_clear_messages():
    for cls, extra in ((LocalConfig, {}), (PyTorchJobConfig, {"image": "img:1"})):
        with pytest.raises(ValidationError, match="nnodes"):
            cls(nnodes=0, **extra)
        with pytest.raises(ValidationError, match="nproc_per_node"):
            cls(nproc_per_node=0, **extra)
        with pytest.raises(ValidationError, match="extra"):
            cls(nnode=2, **extra)  # a typo is an error, not a default
    for image in (None, ""):
        with pytest.raises(ValidationError, match="launcher 'pytorchjob' needs the training image"):
            PyTorchJobConfig(image=image, nnodes=2)
    with pytest.raises(ValidationError, match="needs the training image"):
        PyTorchJobConfig(nnodes=2)
    with pytest.raises(ValidationError, match="local launcher runs one node"):
        LocalConfig(nnodes=2)
    with pytest.raises(ValidationError, match="cleanup"):
        PyTorchJobConfig(image="img:1", cleanup="sometimes")


def test_launch_config_by_name_takes_each_backends_own_knobs():
    knobs = dict(nnodes=1, nproc_per_node=2, gpus_per_node=1, node_selector={"pool": "gpu"},
                 image="img:1", timeout_s=None)
    local = launch_config("local", **knobs)
    assert local == LocalConfig(nproc_per_node=2)  # no image/GPUs locally; None = default timeout
    job = launch_config("pytorchjob", **dict(knobs, nnodes=3, timeout_s=600))
    assert isinstance(job, PyTorchJobConfig)
    assert (job.nnodes, job.gpus_per_node, job.image, job.timeout_s) == (3, 1, "img:1", 600)
    # The GPU taint's toleration is the pipeline's one definition, added when GPUs are asked for.
    from musictext.cluster import GPU_TOLERATION

    assert job.pod_tolerations() == [GPU_TOLERATION]
    assert launch_config("pytorchjob", image="img:1").pod_tolerations() == []
    with pytest.raises(ValueError, match="unknown launcher 'slurm' .*local, pytorchjob"):
        launch_config("slurm", **knobs)
    with pytest.raises(TypeError, match="imgae"):
        launch_config("local", imgae="img:1")
    with pytest.raises(ValidationError, match="needs the training image"):
        launch_config("pytorchjob", **dict(knobs, image=""))


def test_job_spec_needs_one_config_source_and_validates_it_up_front():
    where = dict(stage=1, text_dir="t", targets_dir="g", out_dir="o")
    with pytest.raises(ValidationError, match="exactly one of config"):
        TrainJobSpec(**where)
    cfg = load_family_config("muq", "demo")
    with pytest.raises(ValidationError, match="exactly one of config"):
        TrainJobSpec(config=cfg, family="muq", **where)
    with pytest.raises(ValidationError, match="stage"):
        TrainJobSpec(family="muq", **dict(where, stage=3))
    # A config error surfaces in the launcher, before any training process starts.
    with pytest.raises(ValidationError, match="unknown loss 'nope'; known losses: .*infonce"):
        TrainJobSpec(family="muq", overrides={"train": {"stage1": {"loss": "nope"}}}, **where)
    resolved = TrainJobSpec(config=cfg, init_dir="i", log_dir="l", **where).program_args()
    from musictext.train.run import load_config, parse_args

    assert load_config(parse_args(resolved)) == cfg  # the resolved config travels whole
    named = TrainJobSpec(family="muq", profile="demo", **where).program_args()
    assert named[:4] == ["--family", "muq", "--profile", "demo"] and "--overrides-json" not in named


# -- waiting on a fake cluster ---------------------------------------------------------------
RUNNING = [cond("Created"), cond("Running")]


def _scripted(*states) -> FakeCluster:
    cluster = FakeCluster()
    cluster.add(_manifest())
    cluster.script["musictext-muq-s1-abc123"] = [list(s) for s in states]
    return cluster


def _wait(cluster, timeout_s=600, poll_s=10, **kw):
    clock = FakeClock()
    job = wait_for_job(cluster, PYTORCHJOB, "musictext-muq-s1-abc123", "team", timeout_s=timeout_s, poll_s=poll_s,
                       clock=clock, sleep=clock.sleep, **kw)
    return job, clock


def test_wait_succeeded():
    cluster = _scripted([], [cond("Created")], RUNNING,
                        [cond("Created", "True"), cond("Running", "False"), cond("Succeeded")])
    job, clock = _wait(cluster)
    assert job["metadata"]["name"] == "musictext-muq-s1-abc123"
    assert clock.t == 30
    assert set(cluster.request_timeouts) == {30.0}  # short per-request timeout, separate from the job's


def test_wait_failed_raises_with_message():
    cluster = _scripted(RUNNING, [cond("Created"), cond("Running", "False"), cond("Failed", message="pytorch exited 1: OOM")])
    with pytest.raises(JobFailed, match="OOM"):
        _wait(cluster)


def test_wait_times_out_on_the_job_clock():
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="not finished after 100s"):
        wait_for_job(_scripted(RUNNING), PYTORCHJOB, "musictext-muq-s1-abc123", "team", timeout_s=100, poll_s=30,
                     clock=clock, sleep=clock.sleep)
    assert 100 <= clock.t <= 130


def test_transient_api_errors_are_retried_but_others_raise():
    from kubernetes.client.exceptions import ApiException

    def failing(*statuses):
        cluster = _scripted([cond("Succeeded")])
        errors = list(statuses)

        def flaky(name):
            if errors:
                raise ApiException(status=errors.pop(0))

        cluster.hook_on_get = flaky
        return cluster

    _wait(failing(404, 503, 429), poll_s=1)
    with pytest.raises(ApiException):
        _wait(failing(403), poll_s=1)
    # A job seen once and then gone was deleted under us: that is a failure, not a wait.
    cluster = _scripted(RUNNING)
    seen = []

    def vanishing(name):
        if seen:
            raise ApiException(status=404)
        seen.append(name)

    cluster.hook_on_get = vanishing
    with pytest.raises(JobFailed, match="deleted while running"):
        _wait(cluster, poll_s=1)


def test_run_cleans_up_per_policy():
    def run(states, **kw):
        cluster = FakeCluster(default_script=states)
        run_job(_manifest(), PYTORCHJOB, api=cluster, core=cluster, poll_s=0, **kw)
        return cluster

    ok = run([[cond("Succeeded")]])
    assert ok.created and [n for n, _ in ok.deleted] == ["musictext-muq-s1-abc123"]
    assert run([[cond("Succeeded")]], cleanup="never").deleted == []
    failed = FakeCluster(default_script=[[cond("Failed", message="boom")]])
    with pytest.raises(JobFailed, match="boom"):
        run_job(_manifest(), PYTORCHJOB, api=failed, core=failed, poll_s=0)
    assert failed.deleted == []  # kept for debugging by default
    failed = FakeCluster(default_script=[[cond("Failed", message="boom")]])
    with pytest.raises(JobFailed):
        run_job(_manifest(), PYTORCHJOB, api=failed, core=failed, poll_s=0, cleanup="always")
    assert failed.deleted
    with pytest.raises(ValueError, match="cleanup must be"):
        run_job(_manifest(), PYTORCHJOB, api=failed, cleanup="sometimes")


def test_launch_pytorchjob_path(tmp_path, validator):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_state.json").write_text(json.dumps({"best_valid_r1": 0.5}))
    job = TrainJobSpec(family="muq", profile="demo", stage=1, text_dir="gs://b/text",
                       targets_dir="gs://b/targets", out_dir=str(out))
    config = PyTorchJobConfig(nnodes=2, nproc_per_node=2, image="img:1", namespace="ns", gpus_per_node=2, poll_s=0)
    api = FakeCluster(default_script=[[cond("Succeeded")]])
    state = launch(job, config, api=api, core=api)
    assert state == {"best_valid_r1": 0.5}
    (manifest,) = api.created
    validator.validate(manifest)
    args = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    assert args == job.program_args()
    assert manifest["metadata"]["name"].startswith("musictext-muq-s1-")
    assert manifest["metadata"]["namespace"] == "ns"

    failing = FakeCluster(default_script=[[cond("Failed", message="worker 1 exited")]])
    with pytest.raises(JobFailed, match="worker 1 exited"):
        launch(job, config, api=failing, core=failing)
    with pytest.raises(TypeError):
        launch(job, LocalConfig(), api=api)  # the local backend has no cluster API


def test_kfp_task_body_hands_bucket_uris_to_the_pods(tmp_path):
    from types import SimpleNamespace

    out = tmp_path / "model"
    out.mkdir()
    (out / "train_state.json").write_text(json.dumps({"best_epoch": 1}))

    def art(name, uri=None, path=None):
        return SimpleNamespace(uri=uri or f"gs://bucket/{name}", path=str(path or f"/gcs/bucket/{name}"))

    api = FakeCluster(default_script=[[cond("Succeeded")]])
    what = dict(family="mert", profile="demo", stage=2, overrides={"train": {"stage2": {"epochs": 1}}},
                text=art("text"), targets=art("targets"), init=art("stage1"),
                # the "bucket" is a local dir here; the launcher pod's own copy is another dir
                model=art("model", uri=str(out), path=tmp_path / "launcher_copy"))
    config = launch_config("pytorchjob", nnodes=2, nproc_per_node=1, gpus_per_node=1,
                           node_selector={"pool": "gpu"}, image="img:2")
    # pytorchjob: pods get the bucket URIs (the launcher's /gcs mount is not theirs)
    state = run_train_task(config.model_copy(update={"poll_s": 0, "namespace": "ns"}), api=api, core=api, **what)
    assert state == {"best_epoch": 1}
    args = api.created[0]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--text-dir") + 1] == "gs://bucket/text"
    assert args[args.index("--init-dir") + 1] == "gs://bucket/stage1"
    pod = api.created[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "training"  # the chart's PDB
    # What the job wrote at the URI is mirrored to the local path KFP uploads from.
    assert json.loads((tmp_path / "launcher_copy" / "train_state.json").read_text()) == {"best_epoch": 1}


# -- the built job's command, run as two local "nodes" -----------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_built_job_runs_as_two_local_nodes(tmp_path, toy_dataset, tiny_base_model, validator):
    """What the backend submits trains: its container command on two processes with the
    environment the Training Operator injects into each replica's "pytorch" container."""
    root, info = toy_dataset(n_clips=60, block_dim=4)
    overrides = {"audio": {"embed_dim": 4}, "text": {"base_model": tiny_base_model, "hidden_dim": 16},
                 "train": {"stage1": {"epochs": 1, "batch_size": 8}}}
    job = TrainJobSpec(family="muq", profile="demo", overrides=overrides, stage=1, text_dir=str(root / "text"),
                       targets_dir=str(root / "targets"), out_dir=str(tmp_path / "out"))
    config = PyTorchJobConfig(image="img:1", nnodes=2, env={"HF_HUB_OFFLINE": "1"}, namespace="ns", poll_s=0)
    api = FakeCluster(default_script=[[cond("Succeeded")]])
    PyTorchJobBackend(config, api=api, core=api, owner={}).run(job)  # submits, and the fake cluster reports success
    (manifest,) = api.created
    validator.validate(manifest)
    spec = manifest["spec"]
    nnodes = sum(r["replicas"] for r in spec["pytorchReplicaSpecs"].values())
    container = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]

    port = _free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    base_env.update({e["name"]: e["value"] for e in container["env"]})
    base_env.update(
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", MUSICTEXT_PROGRESS="0",
        PET_NNODES=str(nnodes), PET_NPROC_PER_NODE=spec["nprocPerNode"],
        PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(port),
    )
    procs = [
        subprocess.Popen(container["command"] + container["args"], env=dict(base_env, PET_NODE_RANK=str(rank)),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(nnodes)
    ]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * nnodes, "\n".join(o[-3000:] for o in outputs)
    state = json.loads((tmp_path / "out" / "train_state.json").read_text())
    assert state["world_size"] == nnodes and state["n_train"] == info["splits"]["train"]
    assert len(state["losses"]) == 1
