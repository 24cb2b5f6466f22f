"""Launch one training stage: locally through torchrun, or on a cluster as a PyTorchJob."""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading

from musictext import storage
from musictext.cluster import GPU_TOLERATION
from musictext.config import FamilyConfig
from musictext.hub import is_remote
from musictext.layout import STATE_FILE
from musictext.train import pytorchjob

log = logging.getLogger(__name__)

TAIL_LINES = 60


def run_args(
    cfg: FamilyConfig | str,
    stage: int,
    text_dir: str,
    targets_dir: str,
    out_dir: str,
    init_dir: str | None = None,
    profile: str = "production",
    overrides: dict | None = None,
    log_dir: str | None = None,
) -> list[str]:
    """Arguments of ``python -m musictext.train.run`` for this stage."""
    if isinstance(cfg, FamilyConfig):
        # The resolved config travels whole, so the pods need no configs/ checkout to agree.
        args = ["--config-json", cfg.model_dump_json()]
    else:
        args = ["--family", cfg, "--profile", profile]
        if overrides:
            args += ["--overrides-json", json.dumps(overrides)]
    args += ["--stage", str(stage), "--text-dir", text_dir, "--targets-dir", targets_dir, "--out-dir", out_dir]
    if init_dir:
        args += ["--init-dir", init_dir]
    if log_dir:
        args += ["--log-dir", log_dir]
    return args


def run_torchrun(args: list[str], nproc_per_node: int = 1, timeout_s: float | None = None) -> None:
    """torchrun --standalone as a subprocess; stream its output; raise with the tail on failure."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc-per-node", str(nproc_per_node), "-m", "musictext.train.run", *args,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    log.info("launching: torchrun --nproc-per-node %d musictext.train.run %s", nproc_per_node, _short(args))
    timed_out = threading.Event()

    def _kill(proc: subprocess.Popen) -> None:
        # torchrun's workers share its new session: end the whole group we started.
        timed_out.set()
        os.killpg(proc.pid, signal.SIGKILL)

    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1,
                          start_new_session=True) as proc:
        # A watchdog, so a hung rendezvous (no output at all) still ends at the timeout.
        watchdog = threading.Timer(timeout_s, _kill, (proc,)) if timeout_s else None
        if watchdog:
            watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                tail.append(line.rstrip("\n"))
            rc = proc.wait()
        finally:
            if watchdog:
                watchdog.cancel()
    if timed_out.is_set():
        raise TimeoutError(f"training exceeded {timeout_s:.0f}s; last output:\n" + "\n".join(tail))
    if rc != 0:
        raise RuntimeError(f"training failed (exit {rc}); last output:\n" + "\n".join(tail))


def _short(args: list[str]) -> str:
    return " ".join(a if len(a) < 80 else a[:77] + "..." for a in args)


def train_stage(
    cfg: FamilyConfig | str,
    stage: int,
    text_dir: str,
    targets_dir: str,
    out_dir: str,
    init_dir: str | None = None,
    launcher: str = "local",
    nnodes: int = 1,
    nproc_per_node: int = 1,
    *,
    profile: str = "production",
    overrides: dict | None = None,
    log_dir: str | None = None,
    **job_options,
) -> dict:
    """Train one stage and return its train_state.json.

    ``cfg`` is a FamilyConfig, or a family name resolved with ``profile`` and ``overrides``.
    launcher="local": ``timeout_s`` optional. launcher="pytorchjob": ``image`` required; also
    ``namespace``, ``name``, ``gpus_per_node``, ``node_selector``, ``tolerations``,
    ``service_account``, ``env``, ``cpu``, ``memory``, ``backoff_limit``,
    ``ttl_seconds_after_finished``, ``timeout_s`` (job timeout), ``poll_s``, ``cleanup``
    (always|on_success|never) and ``api`` (a CustomObjectsApi; default from the cluster).
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, not {stage}")
    args = run_args(cfg, stage, text_dir, targets_dir, out_dir, init_dir, profile, overrides, log_dir)
    if launcher == "local":
        if nnodes != 1:
            raise ValueError("the local launcher runs one node; use launcher='pytorchjob' for more")
        unknown = set(job_options) - {"timeout_s"}
        if unknown:
            raise TypeError(f"unknown options for the local launcher: {sorted(unknown)}")
        run_torchrun(args, nproc_per_node, job_options.get("timeout_s"))
    elif launcher == "pytorchjob":
        run_on_cluster(cfg, stage, args, out_dir, nnodes, nproc_per_node, **job_options)
    else:
        raise ValueError(f"unknown launcher {launcher!r} (local | pytorchjob)")
    return storage.read_json(storage.join(out_dir, STATE_FILE))


def run_on_cluster(
    cfg: FamilyConfig | str,
    stage: int,
    args: list[str],
    out_dir: str,
    nnodes: int,
    nproc_per_node: int,
    image: str,
    namespace: str | None = None,
    name: str | None = None,
    timeout_s: float = 24 * 3600,
    poll_s: float = 15.0,
    cleanup: str = "on_success",
    api=None,
    **manifest_options,
) -> dict:
    if not is_remote(out_dir):
        log.warning("out_dir %s is local: pods will write it on their own disk", out_dir)
    family = cfg.family if isinstance(cfg, FamilyConfig) else cfg
    manifest = pytorchjob.build_pytorchjob(
        name=name or pytorchjob.job_name(f"musictext-{family}-s{stage}"),
        namespace=namespace or pytorchjob.current_namespace(),
        image=image,
        args=args,
        nnodes=nnodes,
        nproc_per_node=nproc_per_node,
        **manifest_options,
    )
    return pytorchjob.run_pytorchjob(manifest, api=api, timeout_s=timeout_s, poll_s=poll_s, cleanup=cleanup)


def artifact_location(artifact, launcher: str) -> str:
    """Where a KFP artifact directory is reachable by the training processes.

    Locally (and inside the launching pod) its ``.path``; PyTorchJob pods do not mount the
    launcher's filesystem, so they get the bucket ``.uri``.
    """
    return artifact.uri if launcher == "pytorchjob" else artifact.path


def run_train_task(
    family: str,
    profile: str,
    stage: int,
    overrides: dict | None,
    text,
    targets,
    model,
    init=None,
    launcher: str = "local",
    nnodes: int = 1,
    nproc_per_node: int = 1,
    gpus_per_node: int = 0,
    node_selector: dict | None = None,
    image: str | None = None,
    timeout_s: float | None = None,
    **job_options,
) -> dict:
    """The KFP train component's body: KFP artifacts in, train_state out.

    ``job_options`` go to train_stage (e.g. namespace, service_account, tolerations, api).
    """
    loc = lambda a: artifact_location(a, launcher)  # noqa: E731
    job = dict(job_options)
    if timeout_s:
        job["timeout_s"] = timeout_s
    if launcher == "pytorchjob":
        if not image:
            raise ValueError("launcher 'pytorchjob' needs the training image")
        job.update(image=image, gpus_per_node=gpus_per_node, node_selector=node_selector or None)
        if gpus_per_node:
            # Same taint toleration as the pipeline's GPU steps, so the job lands on that pool.
            job.setdefault("tolerations", [GPU_TOLERATION])
        # The chart's PodDisruptionBudget selects training pods by this label.
        job.setdefault("labels", {"app.kubernetes.io/component": "training"})
    state = train_stage(
        family, stage, loc(text), loc(targets), loc(model), init_dir=loc(init) if init else None,
        launcher=launcher, nnodes=nnodes, nproc_per_node=nproc_per_node, profile=profile,
        overrides=overrides, **job,
    )
    if launcher == "pytorchjob":
        mirror_to_local(model.uri, model.path)
    return state




def mirror_to_local(uri: str, path: str) -> None:
    """Copy what the job wrote at the artifact's bucket URI to its local path.

    The KFP launcher uploads an output artifact's local path to its URI when the task ends; an
    empty local path would replace what the PyTorchJob wrote there.
    """
    fs, remote = storage.fs_for(uri)
    os.makedirs(path, exist_ok=True)
    fs.get(remote.rstrip("/") + "/", path, recursive=True)
