"""The TrainJob backend (Kubeflow Trainer v2) and what both cluster backends share: objects
against the CRDs and the runtime, names and adoption on retry, cancel and timeout, failure
reports, RBAC, and the built job's own command trained as two local nodes."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from musictext.train.launch import (
    RBAC_RULES,
    JobCancelled,
    JobFailed,
    NodesFailed,
    PyTorchJobBackend,
    PyTorchJobConfig,
    TrainJobBackend,
    TrainJobConfig,
    TrainJobSpec,
    build_pytorchjob,
    build_trainjob,
    delete_run_jobs,
    launch,
    launch_config,
    run_job,
    run_trainjob_locally,
)
from musictext.train.launch.cluster import JOB_KINDS, job_name, launcher_owner, name_for
from musictext.train.launch.trainjob import TRAINJOB
from tests.fake_k8s import FakeClock, FakeCluster, cond
from tests.k8s_schemas import CRDS, K8S_VERSION, crd_validator, validate_object

ARGS = ["--family", "muq", "--stage", "1", "--out-dir", "gs://b/out"]
GPU = dict(image="registry/musictext:1", nnodes=3, nproc_per_node=4, gpus_per_node=4,
           node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}, service_account="musictext",
           env={"HF_HUB_OFFLINE": "1"}, requests={"cpu": "8", "memory": "32Gi"}, limits={"memory": "32Gi"},
           shm_size="16Gi", bucket_secret="gcs-key", run_id="3f2a-run", task_id="task-7", labels={"team": "ml"})
JOB = TrainJobSpec(family="muq", profile="demo", stage=1, text_dir="gs://b/text", targets_dir="gs://b/targets",
                   out_dir="gs://b/out")


@pytest.fixture(scope="module")
def validator():
    return crd_validator("trainer.kubeflow.org/v1alpha1", "TrainJob")


def _node_pod(tj: dict) -> dict:
    (patch,) = tj["spec"]["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return node["template"]["spec"]["template"]


def _runtime() -> dict:
    """The torch-distributed runtime (a Helm template: drop its template lines to read it)."""
    text = (CRDS / "runtime-torch-distributed.yaml").read_text()
    return yaml.safe_load("\n".join(line for line in text.splitlines() if "{{" not in line))


# -- the object -------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [dict(image="img:1"), GPU], ids=["default", "gpu"])
def test_trainjob_validates_against_the_crd_and_fits_the_runtime(options, validator):
    tj = build_trainjob(TrainJobConfig(**options), ARGS, name="musictext-muq-s1-abc", namespace="team")
    errors = sorted(validator.iter_errors(tj), key=str)
    assert not errors, [e.message for e in errors]
    validate_object(tj)  # metadata as ObjectMeta too
    spec = tj["spec"]
    assert spec["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                  "name": "torch-distributed"}
    # The runtime: a "node" job whose "node" container has no command, and the torch policy
    # (which injects PET_*): so a bare torchrun in trainer.command is the entrypoint.
    runtime = _runtime()
    assert "torch" in runtime["spec"]["mlPolicy"]
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    (rcontainer,) = rjob["template"]["spec"]["template"]["spec"]["containers"]
    assert "command" not in rcontainer
    assert spec["trainer"]["command"] == ["torchrun", "-m", "musictext.train"] and spec["trainer"]["args"] == ARGS
    pod = _node_pod(tj)
    assert rjob["name"] == "node" and [c["name"] for c in pod["spec"]["containers"]] == [rcontainer["name"]]
    # The patched pod, merged onto the runtime's container, is a valid core pod template.
    container = {**rcontainer, **pod["spec"]["containers"][0], "image": spec["trainer"]["image"],
                 "command": spec["trainer"]["command"], "args": spec["trainer"]["args"]}
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "node"},
                                  "template": {**pod, "spec": {**pod["spec"], "containers": [container]}}},
                                 K8S_VERSION, strict=True)
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert {"/tmp", "/var/cache/musictext", "/dev/shm"} <= mounts  # writable paths the image uses
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "training" and labels["app.kubernetes.io/part-of"] == "musictext"
    assert pod["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert spec["activeDeadlineSeconds"] == 24 * 3600  # the launcher's timeout, as the cluster's deadline


def test_gpu_settings_reach_the_trainjob():
    tj = build_trainjob(TrainJobConfig(**GPU), ARGS, name="n", namespace="team")
    trainer, pod = tj["spec"]["trainer"], _node_pod(tj)
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (3, 4)
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "8", "memory": "32Gi"},
                                           "limits": {"memory": "32Gi", "nvidia.com/gpu": 4}}
    assert pod["spec"]["nodeSelector"] == GPU["node_selector"]
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["spec"]["serviceAccountName"] == "musictext"
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["spec"]["volumes"]
    assert {"name": "bucket-credentials", "secret": {"secretName": "gcs-key"}} in pod["spec"]["volumes"]
    env = {e["name"]: e["value"] for e in trainer["env"]}
    assert env == {"HF_HUB_OFFLINE": "1", "GOOGLE_APPLICATION_CREDENTIALS": "/var/run/secrets/musictext/bucket/key.json"}
    assert tj["metadata"]["labels"] == {"team": "ml", "app.kubernetes.io/part-of": "musictext",
                                        "app.kubernetes.io/component": "training", "musictext.io/run-id": "3f2a-run"}


def test_both_backends_share_the_pod_settings():
    tj_pod = _node_pod(build_trainjob(TrainJobConfig(**GPU), ARGS, name="n", namespace="team"))
    pj = build_pytorchjob(PyTorchJobConfig(**GPU), ARGS, name="n", namespace="team")
    pj_pod = pj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    assert pj_pod["metadata"] == tj_pod["metadata"]
    assert {k: v for k, v in pj_pod["spec"].items() if k != "containers"} == \
           {k: v for k, v in tj_pod["spec"].items() if k != "containers"}
    pj_container, tj_container = pj_pod["spec"]["containers"][0], tj_pod["spec"]["containers"][0]
    assert pj_container["securityContext"] == tj_container["securityContext"]
    assert pj_container["volumeMounts"] == tj_container["volumeMounts"]


def test_trainjob_config_refuses_what_v1alpha1_cannot_say():
    with pytest.raises(ValidationError, match="no ttl_seconds_after_finished.*cleanup"):
        TrainJobConfig(image="img:1", ttl_seconds_after_finished=60)
    with pytest.raises(ValidationError, match="no image_pull_policy"):
        TrainJobConfig(image="img:1", image_pull_policy="Always")
    with pytest.raises(ValidationError, match="launcher 'trainjob' needs the training image"):
        TrainJobConfig(image="")
    with pytest.raises(ValidationError, match="requests.cpu='eight' is not a Kubernetes quantity"):
        TrainJobConfig(image="img:1", requests={"cpu": "eight"})
    with pytest.raises(ValidationError, match="run_id"):
        TrainJobConfig(image="img:1", run_id="not a label value!")
    # Numbers from chart values or JSON options become the strings the API takes.
    numeric = TrainJobConfig(image="img:1", requests={"cpu": 8}, limits={"cpu": 0.5}, env={"OMP_NUM_THREADS": 4})
    assert (numeric.requests, numeric.limits, numeric.env) == ({"cpu": "8"}, {"cpu": "0.5"}, {"OMP_NUM_THREADS": "4"})
    config = launch_config("trainjob", image="img:1", nnodes=2, runtime_ref="torch-custom", timeout_s=None)
    assert isinstance(config, TrainJobConfig) and config.runtime_ref == "torch-custom"
    with pytest.raises(TypeError, match="runtime_rf"):
        launch_config("trainjob", image="img:1", runtime_rf="x")
    # runtime_ref is a TrainJob knob: another launcher ignores it, as local ignores image.
    assert not hasattr(launch_config("pytorchjob", image="img:1", runtime_ref="x"), "runtime_ref")


def test_sdk_agrees_with_our_trainjob_coordinates():
    """The Kubeflow SDK's constants and typed model: names we use without importing it."""
    constants = pytest.importorskip("kubeflow.trainer.constants.constants")
    from kubeflow_trainer_api import models

    assert (TRAINJOB.group, TRAINJOB.version, TRAINJOB.plural, TRAINJOB.kind) == (
        constants.GROUP, constants.VERSION, constants.TRAINJOB_PLURAL, constants.TRAINJOB_KIND)
    assert TRAINJOB.succeeded == constants.TRAINJOB_COMPLETE and TRAINJOB.container == constants.NODE
    assert TRAINJOB.pod_label == constants.JOBSET_NAME_LABEL
    assert constants.DEFAULT_TRAINING_RUNTIME == TrainJobConfig(image="i").runtime_ref
    tj = build_trainjob(TrainJobConfig(**GPU), ARGS, name="n", namespace="team")
    typed = models.TrainerV1alpha1TrainJob.from_dict(tj)
    assert typed.spec.trainer.num_nodes == 3 and typed.spec.runtime_patches[0].manager == "musictext.io/launcher"


# -- names ------------------------------------------------------------------------------------------
def test_job_name_is_deterministic_per_task():
    config = TrainJobConfig(image="i", run_id="run-1", task_id="t-1")
    name = name_for(config, JOB)
    assert name == name_for(config.model_copy(), JOB) and name.startswith("musictext-muq-s1-")
    assert name != name_for(config.model_copy(update={"task_id": "t-2"}), JOB)
    assert name != name_for(config, JOB.model_copy(update={"stage": 2}))
    anonymous = TrainJobConfig(image="i")
    assert name_for(anonymous, JOB) != name_for(anonymous, JOB)  # no run id: a fresh job each time
    assert name_for(anonymous.model_copy(update={"name": "mine"}), JOB) == "mine"


DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("prefix", ["x" * 100, "a-" * 50, "9 Musictext_MuQ / Stage 1!", "---", ""])
def test_job_name_is_a_short_dns_label(prefix):
    name = job_name(prefix, "run-1/t-1/muq/1")
    assert DNS_1035.match(name) and len(name) <= 63, name
    assert job_name(prefix, "run-1/t-1/muq/1") == name  # same key, same name
    assert job_name(prefix, "run-1/t-2/muq/1") != name
    fresh = job_name(prefix)
    assert DNS_1035.match(fresh) and len(fresh) <= 63, fresh


def test_name_for_a_long_run_and_task_is_a_short_dns_label():
    config = TrainJobConfig(image="i", run_id="r" * 63, task_id="t" * 200)
    name = name_for(config, JOB)
    assert DNS_1035.match(name) and len(name) <= 63, name


# -- running against a fake API server --------------------------------------------------------------
def _backend(cluster, **options):
    config = TrainJobConfig(**{"image": "img:1", "namespace": "ns", "poll_s": 0, "run_id": "run-1",
                               "task_id": "t-1", **options})
    return TrainJobBackend(config, api=cluster, core=cluster, owner={})


def test_retry_adopts_a_running_job_instead_of_creating_another():
    cluster = FakeCluster()
    backend = _backend(cluster)
    manifest = backend.manifest(JOB)
    cluster.add(manifest, [cond("Created"), cond("Running")])
    cluster.script[manifest["metadata"]["name"]] = [[cond("Created"), cond("Running")], [cond("Complete")]]
    backend.run(JOB)
    assert cluster.created == [] and cluster.calls[0] == ("trainjobs", "create")  # 409, then adopted
    assert ("trainjobs", "get") in cluster.calls
    assert [n for n, _ in cluster.deleted] == [manifest["metadata"]["name"]]  # cleanup on_success
    assert len({k for k in cluster.objects}) == 0


def test_retry_adopts_a_finished_job_result():
    cluster = FakeCluster()
    backend = _backend(cluster, cleanup="never")
    manifest = backend.manifest(JOB)
    cluster.add(manifest, [cond("Created"), cond("Complete")])
    backend.run(JOB)
    assert cluster.created == [] and cluster.deleted == []
    assert len(cluster.objects) == 1


def test_retry_replaces_a_failed_job():
    cluster = FakeCluster(default_script=[[cond("Created")], [cond("Complete")]])
    backend = _backend(cluster)
    manifest = backend.manifest(JOB)
    cluster.add(manifest, [cond("Failed", message="node 1 OOMKilled")])
    backend.run(JOB)
    name = manifest["metadata"]["name"]
    assert cluster.deleted[0] == (name, "Foreground")  # its pods go before the new job comes
    assert [c["metadata"]["name"] for c in cluster.created] == [name]


def test_failure_raises_with_log_tails_and_events():
    cluster = FakeCluster(default_script=[[cond("Created")], [cond("Failed", message="JobSet failed")]])
    backend = _backend(cluster)
    name = backend.manifest(JOB)["metadata"]["name"]
    cluster.pods[name] = [(f"{name}-node-0-0-a", "Failed", "\n".join(f"line {i}" for i in range(100)) + "\nCUDA OOM"),
                          (f"{name}-node-0-1-b", "Running", "waiting for rank 0")]
    cluster.events = [(f"{name}-node-0-0-a", "Warning", "BackOff", "Back-off restarting failed container"),
                      (name, "Normal", "Created", "created JobSet")]
    with pytest.raises(JobFailed) as info:
        backend.run(JOB)
    message = str(info.value)
    assert "JobSet failed" in message and "CUDA OOM" in message and "waiting for rank 0" in message
    assert "line 99" in message and "line 10\n" not in message  # a tail, not the whole log
    assert "BackOff" in message and "created JobSet" in message
    assert set(cluster.log_containers) == {"node"}
    assert cluster.deleted == []  # on_success keeps a failed job to look at
    with pytest.raises(JobFailed):
        _backend(FakeCluster(default_script=[[cond("Failed")]]), cleanup="always").run(JOB)


def test_timeout_deletes_the_job_and_reports_its_pods():
    cluster = FakeCluster(default_script=[[cond("Created")]])
    manifest = _backend(cluster).manifest(JOB)
    name = manifest["metadata"]["name"]
    cluster.pods[name] = [(f"{name}-node-0-0-a", "Pending", "")]
    cluster.events = [(f"{name}-node-0-0-a", "Warning", "FailedScheduling", "0/3 nodes: Insufficient nvidia.com/gpu")]
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="(?s)not finished after 100s.*Insufficient nvidia.com/gpu"):
        run_job(manifest, TRAINJOB, api=cluster, core=cluster, timeout_s=100, poll_s=30, cleanup="never",
                clock=clock, sleep=clock.sleep)
    assert 100 <= clock.t <= 130
    assert [n for n, _ in cluster.deleted] == [name]  # even with cleanup "never": nothing waits for it


def test_sigterm_deletes_the_job_before_the_launcher_exits():
    cluster = FakeCluster(default_script=[[cond("Created"), cond("Running")]])
    gets = []

    def cancel_on_third_poll(name):
        gets.append(name)
        if len(gets) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what the KFP cancel sends the launcher pod

    cluster.hook_on_get = cancel_on_third_poll
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(JobCancelled, match="SIGTERM"):
        _backend(cluster, cleanup="never").run(JOB)
    assert len(cluster.deleted) == 1 and not cluster.objects
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is the launcher's only while it waits


def test_owner_reference_to_the_kfp_launcher_pod(validator, monkeypatch):
    owner = launcher_owner({"KFP_POD_NAME": "run-abc-train-123", "KFP_POD_UID": "0b1c-uid"})
    assert owner == {"apiVersion": "v1", "kind": "Pod", "name": "run-abc-train-123", "uid": "0b1c-uid"}
    assert launcher_owner({}) is None
    monkeypatch.setattr("musictext.train.launch.cluster.current_namespace", lambda: "ns")
    cluster = FakeCluster(default_script=[[cond("Complete")]])
    config = TrainJobConfig(image="img:1", namespace="ns", poll_s=0, run_id="r", task_id="t", cleanup="never")
    manifest = TrainJobBackend(config, api=cluster, core=cluster, owner=owner).manifest(JOB)
    assert manifest["metadata"]["ownerReferences"] == [owner]
    validator.validate(manifest)
    # Another namespace: an owner reference cannot reach across, so none.
    other = TrainJobBackend(config.model_copy(update={"namespace": "elsewhere"}), owner=owner).manifest(JOB)
    assert "ownerReferences" not in other["metadata"]
    # A retry's new pod joins the owners of the job it adopts.
    cluster.add(manifest, [cond("Running")])
    cluster.script[manifest["metadata"]["name"]] = [[cond("Running")], [cond("Complete")]]
    retry_owner = dict(owner, name="run-abc-train-456", uid="9f-uid")
    TrainJobBackend(config, api=cluster, core=cluster, owner=retry_owner).run(JOB)
    (stored,) = cluster.objects.values()
    assert stored["metadata"]["ownerReferences"] == [owner, retry_owner]
    # cleanup "never" means the job outlives the launcher: no owner from the environment then.
    monkeypatch.setenv("KFP_POD_NAME", "p")
    monkeypatch.setenv("KFP_POD_UID", "u")
    assert TrainJobBackend(config).owner is None
    assert TrainJobBackend(config.model_copy(update={"cleanup": "always"})).owner["uid"] == "u"


def test_delete_run_jobs_removes_both_kinds_of_one_run_only():
    cluster = FakeCluster()
    for backend_cls, config_cls, run in ((TrainJobBackend, TrainJobConfig, "run-1"),
                                         (PyTorchJobBackend, PyTorchJobConfig, "run-1"),
                                         (TrainJobBackend, TrainJobConfig, "run-2")):
        config = config_cls(image="img:1", namespace="ns", run_id=run, task_id="t")
        cluster.add(backend_cls(config, owner={}).manifest(JOB))
    deleted = delete_run_jobs("run-1", namespace="ns", api=cluster)
    assert len(deleted) == 2
    assert [o["metadata"]["labels"]["musictext.io/run-id"] for o in cluster.objects.values()] == ["run-2"]
    with pytest.raises(ValueError, match="needs a run id"):
        delete_run_jobs("", namespace="ns", api=cluster)

    class NoPyTorchJobs(FakeCluster):
        def list_namespaced_custom_object(self, group, version, namespace, plural, label_selector=""):
            if plural == "pytorchjobs":
                from kubernetes.client.exceptions import ApiException

                raise ApiException(status=404, reason="the server could not find the requested resource")
            return super().list_namespaced_custom_object(group, version, namespace, plural, label_selector)

    assert delete_run_jobs("run-2", namespace="ns", api=NoPyTorchJobs()) == []


def _granted(rules: list[dict]) -> set[tuple[str, str]]:
    return {(res, verb) for r in rules for res in r["resources"] for verb in r["verbs"]}


def test_rbac_rules_are_exactly_the_calls_the_launcher_makes(monkeypatch):
    monkeypatch.setattr("musictext.train.launch.cluster.current_namespace", lambda: "ns")  # the launcher pod's
    for launcher, backend_cls, config_cls, plural in (("trainjob", TrainJobBackend, TrainJobConfig, "trainjobs"),
                                                       ("pytorchjob", PyTorchJobBackend, PyTorchJobConfig, "pytorchjobs")):
        calls = set()
        owner = {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}
        config = config_cls(image="img:1", namespace="ns", poll_s=0, run_id="r", task_id="t")
        # adopt (patch the owner) a running job that then fails (diagnostics), then the exit handler
        cluster = FakeCluster()
        backend = backend_cls(config, api=cluster, core=cluster, owner=owner)
        cluster.add({**backend.manifest(JOB), "metadata": {**backend.manifest(JOB)["metadata"], "ownerReferences": []}},
                    [cond("Running")])
        name = backend.manifest(JOB)["metadata"]["name"]
        cluster.script[name] = [[cond("Running")], [cond("Failed")]]
        cluster.pods[name] = [("pod-0", "Failed", "boom")]
        with pytest.raises(JobFailed):
            backend.run(JOB)
        delete_run_jobs("r", namespace="ns", api=cluster)
        calls |= set(cluster.calls)
        # a failed job replaced by a new one
        cluster = FakeCluster(default_script=[[cond(backend.kind.succeeded)]])
        cluster.add(backend.manifest(JOB), [cond("Failed")])
        backend_cls(config, api=cluster, core=cluster, owner=owner).run(JOB)
        calls |= set(cluster.calls)
        # delete_run_jobs also lists the other kind; without its rules that is a 403 it skips.
        other = {k.plural for k in JOB_KINDS.values()} - {plural}
        calls = {(res, verb) for res, verb in calls if res not in other}
        assert calls == _granted(RBAC_RULES[launcher]), launcher
        (job_rule,) = [r for r in RBAC_RULES[launcher] if plural in r["resources"]]
        assert job_rule["apiGroups"] == [backend.kind.group]
        assert not any("*" in r["verbs"] or "*" in r["resources"] for r in RBAC_RULES[launcher])


# -- the built TrainJob trained as two local nodes -----------------------------------------------------
def _node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "RANK", "WORLD_SIZE", "LOCAL_", "MASTER_"))}
    env.update(PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
               OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", MUSICTEXT_PROGRESS="0")
    return env


def _nodes_controller(node_env=None):
    """The fake cluster's controller: run each created TrainJob's nodes as local processes and
    report the outcome as the Trainer would (conditions, one pod per node with its log)."""

    def controller(cluster: FakeCluster, body: dict) -> None:
        name = body["metadata"]["name"]
        try:
            results = run_trainjob_locally(body, env=_node_env(), node_env=node_env, timeout_s=240)
            final = [cond("Created"), cond("Complete")]
        except NodesFailed as err:
            results, final = err.results, [cond("Created"), cond("Failed", message="jobset failed: node failed")]
            cluster.node_failure = str(err)
        cluster.pods[name] = [(f"{name}-node-0-{r.rank}-x", "Succeeded" if r.returncode == 0 else "Failed", r.output)
                              for r in results]
        cluster.script[name] = [final]

    return controller


@pytest.fixture
def tiny_job(tmp_path, toy_dataset, tiny_base_model):
    root, info = toy_dataset(n_clips=60, block_dim=4)
    overrides = {"audio": {"embed_dim": 4}, "text": {"base_model": tiny_base_model, "hidden_dim": 16},
                 "train": {"stage1": {"epochs": 1, "batch_size": 8}}}
    job = TrainJobSpec(family="muq", profile="demo", overrides=overrides, stage=1, text_dir=str(root / "text"),
                       targets_dir=str(root / "targets"), out_dir=str(tmp_path / "out"))
    return job, info


def test_built_trainjob_trains_as_two_local_nodes(tiny_job, validator):
    """The TrainJob the backend submits, its command + args + env run as the torch runtime runs
    them (two nodes, PET_* injected), trains: one world of size 2."""
    job, info = tiny_job
    cluster = FakeCluster(on_create=_nodes_controller())
    config = TrainJobConfig(image="img:1", nnodes=2, env={"HF_HUB_OFFLINE": "1"}, namespace="ns", poll_s=0,
                            run_id="run-1", task_id="t-1")
    state = launch(job, config, api=cluster, core=cluster, owner={})
    (manifest,) = cluster.created
    validator.validate(manifest)
    assert state["world_size"] == 2 and state["n_train"] == info["splits"]["train"]
    assert json.loads((Path(job.out_dir) / "train_state.json").read_text()) == state
    assert len(state["losses"]) == 1


def test_failing_node_fails_the_launch_with_its_log_tail(tiny_job, tmp_path):
    """Node 1's image cannot import the program: the job fails, the launcher raises, and the
    message carries node 1's own output (read back as its pod's log)."""
    job, _ = tiny_job
    broken = tmp_path / "broken" / "musictext"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('node 1 has a broken musictext install')\n")
    cluster = FakeCluster(on_create=_nodes_controller(node_env={1: {"PYTHONPATH": str(broken.parent)}}))
    config = TrainJobConfig(image="img:1", nnodes=2, env={"HF_HUB_OFFLINE": "1"}, namespace="ns", poll_s=0)
    with pytest.raises(JobFailed, match="(?s)jobset failed.*node-0-1-x \\(Failed\\).*node 1 has a broken musictext"):
        launch(job, config, api=cluster, core=cluster, owner={})
    # The local runner says which node failed, and ended the other instead of leaving it waiting.
    assert re.match(r"(?s)node 1 exited 1\n.*broken musictext install", cluster.node_failure)
    assert [phase for _, phase, _ in next(iter(cluster.pods.values()))] == ["Failed", "Failed"]
