"""PyTorchJob manifests against the CRD schema, and the wait logic against a fake API."""

import copy
import json

import pytest

from musictext.train.launch import train_stage
from musictext.train.pytorchjob import JobFailed, build_pytorchjob, run_pytorchjob, wait_for_job
from tests.k8s_schemas import crd_validator

@pytest.fixture(scope="module")
def validator():
    return crd_validator("kubeflow.org/v1", "PyTorchJob")


def _manifest(**kw):
    args = dict(
        name="musictext-muq-s1-abc123", namespace="team", image="registry/musictext:1",
        args=["--family", "muq", "--stage", "1", "--out-dir", "gs://b/out"], nnodes=3,
        nproc_per_node=4, gpus_per_node=4, node_selector={"pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        service_account="trainer", env={"HF_HUB_OFFLINE": "1"}, cpu="8", memory="32Gi",
        ttl_seconds_after_finished=3600,
    )
    args.update(kw)
    return build_pytorchjob(**args)


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
    assert spec["runPolicy"]["backoffLimit"] == 0


def test_single_node_has_no_workers(validator):
    m = _manifest(nnodes=1, gpus_per_node=0, node_selector=None, tolerations=None)
    validator.validate(m)
    assert set(m["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    container = m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"cpu": "8", "memory": "32Gi"}, "requests": {"cpu": "8", "memory": "32Gi"}}


def test_schema_rejects_broken_manifests(validator):
    bad = _manifest()
    bad["spec"]["nprocPerNode"] = 4  # must be a string
    assert not validator.is_valid(bad)
    typo = copy.deepcopy(_manifest())
    typo["spec"]["runPolicy"]["backofLimit"] = 1
    assert not validator.is_valid(typo)


# -- waiting on a fake cluster ---------------------------------------------------------------
class FakeApi:
    """CustomObjectsApi stand-in: serves a scripted sequence of job states."""

    def __init__(self, states, errors=()):
        self.states = list(states)
        self.errors = list(errors)
        self.created, self.deleted, self.request_timeouts = [], [], []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, plural) == ("kubeflow.org", "v1", "pytorchjobs")
        self.created.append(body)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, _request_timeout=None):
        self.request_timeouts.append(_request_timeout)
        if self.errors:
            err = self.errors.pop(0)
            if err is not None:
                raise err
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"metadata": {"name": name}, "status": {"conditions": state}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append(name)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def cond(kind, status="True", message=""):
    return {"type": kind, "status": status, "message": message}


RUNNING = [cond("Created"), cond("Running")]


def test_wait_succeeded():
    api = FakeApi([[], [cond("Created")], RUNNING, [cond("Created", "True"), cond("Running", "False"), cond("Succeeded")]])
    clock = FakeClock()
    job = wait_for_job(api, "j", "ns", timeout_s=600, poll_s=10, clock=clock, sleep=clock.sleep)
    assert job["metadata"]["name"] == "j"
    assert clock.t == 30
    assert all(t == 30.0 for t in api.request_timeouts)  # short per-request timeout, separate from the job's


def test_wait_failed_raises_with_message():
    api = FakeApi([RUNNING, [cond("Created"), cond("Running", "False"), cond("Failed", message="pytorch exited 1: OOM")]])
    clock = FakeClock()
    with pytest.raises(JobFailed, match="OOM"):
        wait_for_job(api, "j", "ns", timeout_s=600, poll_s=10, clock=clock, sleep=clock.sleep)


def test_wait_times_out_on_the_job_clock():
    api = FakeApi([RUNNING])
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="not finished after 100s"):
        wait_for_job(api, "j", "ns", timeout_s=100, poll_s=30, clock=clock, sleep=clock.sleep)
    assert 100 <= clock.t <= 130


def test_transient_api_errors_are_retried_but_others_raise():
    class ApiErr(Exception):
        def __init__(self, status):
            self.status = status

    api = FakeApi([[cond("Succeeded")]], errors=[ApiErr(404), ApiErr(503), None])
    clock = FakeClock()
    wait_for_job(api, "j", "ns", timeout_s=100, poll_s=1, clock=clock, sleep=clock.sleep)
    api = FakeApi([[cond("Succeeded")]], errors=[ApiErr(403)])
    with pytest.raises(ApiErr):
        wait_for_job(api, "j", "ns", timeout_s=100, poll_s=1, clock=clock, sleep=clock.sleep)


def test_run_cleans_up_per_policy():
    ok = FakeApi([[cond("Succeeded")]])
    run_pytorchjob(_manifest(), api=ok, poll_s=0)
    assert ok.created and ok.deleted == ["musictext-muq-s1-abc123"]
    failed = FakeApi([[cond("Failed", message="boom")]])
    with pytest.raises(JobFailed):
        run_pytorchjob(_manifest(), api=failed, poll_s=0)
    assert failed.deleted == []  # kept for debugging by default
    failed = FakeApi([[cond("Failed", message="boom")]])
    with pytest.raises(JobFailed):
        run_pytorchjob(_manifest(), api=failed, poll_s=0, cleanup="always")
    assert failed.deleted


def test_train_stage_pytorchjob_path(tmp_path, validator):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_state.json").write_text(json.dumps({"best_valid_r1": 0.5}))
    api = FakeApi([[cond("Succeeded")]])
    state = train_stage("muq", 1, "gs://b/text", "gs://b/targets", str(out), launcher="pytorchjob",
                        nnodes=2, nproc_per_node=2, profile="demo", image="img:1", namespace="ns",
                        gpus_per_node=2, api=api, poll_s=0)
    assert state == {"best_valid_r1": 0.5}
    (manifest,) = api.created
    validator.validate(manifest)
    args = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["--family", "muq", "--profile", "demo"] and "--out-dir" in args
    assert manifest["metadata"]["name"].startswith("musictext-muq-s1-")

    failing = FakeApi([[cond("Failed", message="worker 1 exited")]])
    with pytest.raises(JobFailed, match="worker 1 exited"):
        train_stage("muq", 1, "t", "g", str(out), launcher="pytorchjob", image="img:1",
                    namespace="ns", api=failing, poll_s=0)


def test_kfp_task_body_hands_bucket_uris_to_the_pods(tmp_path):
    from types import SimpleNamespace

    from musictext.train.launch import run_train_task

    out = tmp_path / "model"
    out.mkdir()
    (out / "train_state.json").write_text(json.dumps({"best_epoch": 1}))

    def art(name, uri=None, path=None):
        return SimpleNamespace(uri=uri or f"gs://bucket/{name}", path=str(path or f"/gcs/bucket/{name}"))

    api = FakeApi([[cond("Succeeded")]])
    kwargs = dict(family="mert", profile="demo", stage=2, overrides={"train": {"stage2": {"epochs": 1}}},
                  text=art("text"), targets=art("targets"), init=art("stage1"),
                  # the "bucket" is a local dir here; the launcher pod's own copy is another dir
                  model=art("model", uri=str(out), path=tmp_path / "launcher_copy"),
                  nnodes=2, nproc_per_node=1, gpus_per_node=1, node_selector={"pool": "gpu"})
    # pytorchjob: pods get the bucket URIs (the launcher's /gcs mount is not theirs)
    state = run_train_task(launcher="pytorchjob", image="img:2", api=api, poll_s=0, namespace="ns", **kwargs)
    assert state == {"best_epoch": 1}
    args = api.created[0]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--text-dir") + 1] == "gs://bucket/text"
    assert args[args.index("--init-dir") + 1] == "gs://bucket/stage1"
    pod = api.created[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "training"  # the chart's PDB
    # What the job wrote at the URI is mirrored to the local path KFP uploads from.
    assert json.loads((tmp_path / "launcher_copy" / "train_state.json").read_text()) == {"best_epoch": 1}
    with pytest.raises(ValueError, match="image"):
        run_train_task(launcher="pytorchjob", image=None, **kwargs)
