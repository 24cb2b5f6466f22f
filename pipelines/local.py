"""`musictext run --local`: the same pipeline function, executed by kfp.local on this machine.

Outputs land in runs/<run-id>/ (params.json, metrics.json, report.html, rejected.json,
checkpoints/, the kfp.local pipeline root with every task's artifacts, and logs/); runs/latest
points at the newest run that finished.

A run survives kill -9 (docs/resume.md): kfp.local's cache records each finished task under
pipeline/.kfp_cache, the run's directories keep their names, so ``--resume`` skips every finished
task and reruns the rest in place (training continues from its checkpoints); a watchdog process
ends every process of a run once the runner is gone, however it went.

kfp.local prints every task's executor input and full output (~90 lines a task). Here each
task's output goes to runs/<run-id>/logs/<task>.log instead, and the terminal gets one line as
a task starts and one as it ends (with the numbers from its outputs' metadata), a live progress
line on a TTY, and a failed task's log tail. ``verbose`` also streams everything as kfp does.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import fcntl
import functools
import inspect
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from unittest import mock

from musictext.logs import PROGRESS_EVENTS_ENV, format_progress, parse_progress_event
from musictext.process import on_stop_signals

# metrics.json last: a run dir with it (or with dry_run.json) is a finished run.
DELIVERABLES = ("report.html", "rejected.json", "checkpoints", "metrics.json")
DRY_RUN_FILE = "dry_run.json"
FINISHED_MARKS = ("metrics.json", DRY_RUN_FILE)
PARAMS_FILE = "params.json"
PIPELINE_DIR = "pipeline"  # kfp.local's pipeline root: every task's artifacts
KFP_CACHE_DIR = ".kfp_cache"  # under PIPELINE_DIR: kfp.local's record of each finished task
# Every task's TMPDIR and kfp.local's workspace: inside the run, so a killed run's temporaries
# are found (and removed) by its resume, and a finished run removes them.
TMP_DIR = ".tmp"
# Every process a run starts inherits this variable (value: the run dir); that is how the
# watchdog and a resume find them, whatever session or process group they moved to.
RUN_ENV = "MUSICTEXT_LOCAL_RUN"
# How long the watchdog (or a resume) keeps killing a run's processes while new ones appear.
KILL_SETTLE_S = 10.0
# kfp.local runs at most this many tasks at once (ParallelExecutor's cap in kfp 2.17).
KFP_LOCAL_CONCURRENCY = 2
LOGS_DIR = "logs"
PIPELINE_LOG = "pipeline.log"  # kfp.local's own messages, outside any task
TAIL_LINES = 40
KFP_EPILOGUE_LINES = 8  # what kfp.local writes after a task's own output: blanks, status, a rule
# A bar's progress reaches its task log this often (and when the bar ends), not at every event.
LOGGED_PROGRESS_S = 10.0
# Without a TTY (CI, a pipe) a running task's progress gets a terminal line this often: rarely,
# so that a long run's output stays a line per task start and end.
PIPED_PROGRESS_S = 60.0
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# The numbers a person checks as a task ends: output-metadata key -> label, in this order.
# Everything else a task reports stays in its log.
SUMMARY_FIELDS = {
    "tracks": "tracks",
    "clips": "clips",
    "rows": "captions",
    "targets": "targets",
    "shards": "shards",
    "families": "families",
    "epochs": "epochs",
    "n_train": "train pairs",
    "best_valid_r1": "valid R@1",
    "valid_chance_r1": "chance",
    "audio_dim": "dim",
    "rejected": "rejected",
}
# embed_audio reports "<family>_targets" / "<family>_rejected" per family.
FAMILY_COUNT = re.compile(r"^(?P<family>[a-z0-9]+)_(?P<what>targets|rejected)$")


def share_cores() -> dict[str, str]:
    """Each concurrently running task's share of the cores, as OMP_NUM_THREADS.

    Every torch process otherwise starts one thread per core; two trainings at once on two cores
    then run ~7x slower per step (measured 4.9 s vs 0.66 s).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"OMP_NUM_THREADS": str(max(1, (cores or 1) // KFP_LOCAL_CONCURRENCY))}


def task_environment(verbose: bool) -> dict[str, str]:
    """What the task subprocesses (which inherit this process's environment) need."""
    env = {**share_cores(), "HF_HUB_OFFLINE": "1"}  # the demo never reaches a hub
    if not verbose:
        env[PROGRESS_EVENTS_ENV] = "1"  # bars as events, drawn here as one status line
    return env


@contextlib.contextmanager
def environment_defaults(values: dict[str, str]) -> Iterator[None]:
    """Set the variables the user has not set, for the duration; a user's own values win."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def point_latest(runs_dir: Path, run_dir: Path) -> None:
    """runs/latest -> run_dir, replaced in one rename (never missing, never half-made)."""
    fresh = runs_dir / f".latest.tmp-{os.getpid()}"
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(run_dir.name)
    os.replace(fresh, runs_dir / "latest")


def effective_params(pipeline, overrides: dict[str, Any]) -> dict[str, Any]:
    """Every pipeline parameter this run used: the pipeline's defaults, then the overrides."""
    inputs = pipeline.component_spec.inputs or {}
    return {**{name: spec.default for name, spec in inputs.items()}, **overrides}


# -- a run's directory: start, resume, lock, clean ------------------------------------------
class RunError(RuntimeError):
    """A run cannot start or resume as asked; the message says which run and why."""


def is_finished(run_dir: Path) -> bool:
    return any((run_dir / mark).exists() for mark in FINISHED_MARKS)


def resume_hint(run_dir: Path) -> str:
    return f"musictext run --local --runs-dir {run_dir.parent} --resume {run_dir.name}"


def new_run_dir(runs_dir: Path, run_id: str | None) -> Path:
    run_dir = runs_dir / (run_id or new_run_id())
    if run_dir.exists() or run_dir.is_symlink():
        raise RunError(f"run {run_dir.name!r} already exists in {runs_dir}: continue it with "
                       f"`{resume_hint(run_dir)}`, or choose another --run-id")
    run_dir.mkdir(parents=True)
    return run_dir


def resumable_run(runs_dir: Path, run_id: str | None) -> Path:
    """The run ``run_id``, or without one the newest unfinished run in ``runs_dir``."""
    if run_id:
        run_dir = runs_dir / run_id
        if not (run_dir / PARAMS_FILE).is_file():
            raise RunError(f"no run {run_id!r} to resume in {runs_dir} (it has no {PARAMS_FILE})")
        return run_dir
    started = [p.parent for p in runs_dir.glob(f"*/{PARAMS_FILE}") if not p.parent.is_symlink()]
    unfinished = [d for d in started if not is_finished(d)]
    if not unfinished:
        raise RunError(f"no unfinished run to resume in {runs_dir}")
    return max(unfinished, key=lambda d: (d / PARAMS_FILE).stat().st_mtime)


def resumed_params(run_dir: Path, pipeline, overrides: dict[str, Any]) -> dict[str, Any]:
    """The parameters ``run_dir`` started with; any given now must be the same (a task rerun
    with other inputs would mix two runs' outputs)."""
    saved = json.loads((run_dir / PARAMS_FILE).read_text())
    inputs = pipeline.component_spec.inputs or {}
    asked = effective_params(pipeline, {**{k: v for k, v in saved.items() if k in inputs}, **overrides})
    if set(saved) != set(asked):
        raise RunError(f"run {run_dir.name!r} ran another pipeline (parameters then only: "
                       f"{sorted(set(saved) - set(asked))}, now only: {sorted(set(asked) - set(saved))}); "
                       f"a --dry-run resumes with --dry-run, a full run without")
    differing = sorted(k for k in saved if saved[k] != asked[k])
    if differing:
        changes = "; ".join(f"{k}: {saved[k]!r} then, {asked[k]!r} now" for k in differing)
        raise RunError(f"run {run_dir.name!r} started with other parameters ({changes}); resume it "
                       f"without parameters (it keeps its {PARAMS_FILE}) or start a new run")
    return saved


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's directory for this process (flock; released by the kernel however the
    process ends, kill -9 included), so two runners never work in one run."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"run {run_dir.name!r} is being run by another process; let it finish "
                           f"or stop it first") from None
        yield
    finally:
        os.close(fd)


def is_temporary(name: str) -> bool:
    """A half-written file: storage.atomic_target's ``*.tmp-*`` or kfp.local's cache entry."""
    return ".tmp-" in name or (name.startswith(".kfp_cache_") and name.endswith(".tmp"))


def temporaries(run_dir: Path) -> list[Path]:
    """TMP_DIR (whole) and every half-written file or directory elsewhere in the run."""
    tmp = run_dir / TMP_DIR
    found = [tmp] if tmp.exists() else []
    return found + [p for p in run_dir.rglob("*") if is_temporary(p.name) and tmp not in p.parents]


def remove_temporaries(run_dir: Path) -> int:
    """Remove the run's temporaries(); returns how many went."""
    found = temporaries(run_dir)
    for path in found:  # one inside an earlier one is already gone
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    return len(found)


# -- a run's processes ----------------------------------------------------------------------
def run_processes(run_dir: Path) -> list[int]:
    """Live processes started for ``run_dir`` (they carry RUN_ENV), this one excepted.

    Linux: read from /proc; a process of another user or a zombie shows no environment.
    """
    mark = f"{RUN_ENV}={run_dir}".encode()
    found = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:  # gone meanwhile, or not ours
            continue
        if mark in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_run_processes(run_dir: Path, settle_s: float = KILL_SETTLE_S) -> int:
    """SIGKILL every process of the run, again while new ones appear; returns how many."""
    killed: set[int] = set()
    deadline = time.monotonic() + settle_s
    while (pids := run_processes(run_dir)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed.update(pids)
        time.sleep(0.05)
    return len(killed)


def watchdog_main(run_dir: str) -> None:
    """The watchdog: wait until the runner's end of the pipe on stdin closes, then end the run's
    processes. Runs in its own session, without RUN_ENV."""
    sys.stdin.buffer.read()
    kill_run_processes(Path(run_dir))


WATCHDOG = "import sys; from musictext_kfp.local import watchdog_main; watchdog_main(sys.argv[1])"


@contextlib.contextmanager
def watched(run_dir: Path) -> Iterator[subprocess.Popen]:
    """A watchdog for the duration: when this process ends, however it ends (kill -9 runs no
    handler, but the kernel closes the pipe), the watchdog kills every process of the run --
    kfp.local's task subprocesses, and torchrun with its workers in their own session."""
    env = {k: v for k, v in os.environ.items() if k != RUN_ENV}
    dog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(run_dir)], stdin=subprocess.PIPE,
                           env=env, start_new_session=True)
    try:
        yield dog
    finally:
        dog.stdin.close()
        dog.wait(timeout=KILL_SETTLE_S + 30)


@contextlib.contextmanager
def stopping_on_signals(run_dir: Path) -> Iterator[None]:
    """SIGTERM/SIGINT: kill the run's processes, say how to resume, exit 128+signal at once.

    At once (os._exit): kfp.local's thread pools would otherwise wait for, or even start, tasks.
    """
    def stop(signum, _frame):
        killed = kill_run_processes(run_dir)
        name = signal.Signals(signum).name
        os.write(2, f"\n{name}: stopped run {run_dir.name} ({killed} processes ended); "
                    f"continue it with `{resume_hint(run_dir)}`\n".encode())
        os._exit(128 + signum)

    with on_stop_signals(stop):
        yield


# -- naming tasks ---------------------------------------------------------------------------
def display_names(pipeline) -> dict[str, str]:
    """Component name ("comp-train-2") -> the task's display name ("train stage 2 ...")."""
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.HasField("dag"))]
    return {t.component_ref.name: t.task_info.name for dag in dags for t in dag.tasks.values()}


def loop_indices(pipeline_resource_name: str) -> list[str]:
    """kfp.local runs a ParallelFor iteration as the sub-DAG "<parent>/for-loop-N-iteration-I"."""
    return re.findall(r"-iteration-(\d+)", pipeline_resource_name)


def task_log_name(component_name: str, pipeline_resource_name: str) -> str:
    """'download.0' for the first shard's download, 'train-2.1' for the second family's stage 2."""
    name = component_name.removeprefix("comp-")
    return ".".join([name, *loop_indices(pipeline_resource_name)])


def task_label(display: str, pipeline_resource_name: str, arguments: dict[str, Any]) -> str:
    """'train stage 1 (InfoNCE) [muq]', 'clip [#0]': the display name and which loop item."""
    family = arguments.get("family")
    if isinstance(family, str):
        return f"{display} [{family}]"
    indices = loop_indices(pipeline_resource_name)
    return f"{display} [#{'.'.join(indices)}]" if indices else display


# -- what a finished task reports -----------------------------------------------------------
def summarize_outputs(outputs: dict[str, Any]) -> str:
    """The numbers that matter from a task's outputs: its artifacts' metadata, list lengths."""
    from kfp import dsl

    metadata: dict[str, Any] = {}
    for value in outputs.values():
        if isinstance(value, dsl.Artifact):
            metadata.update(value.metadata)
        elif isinstance(value, list):  # list_sources' shard plan
            metadata.setdefault("shards", len(value))
    return " · ".join(summary_parts(metadata))


def summary_parts(metadata: dict[str, Any]) -> list[str]:
    parts = [f"{label} {_number(metadata[key])}" for key, label in SUMMARY_FIELDS.items() if key in metadata]
    parts += per_family_parts(metadata)
    parts += retrieval_parts(metadata)
    if "bytes" in metadata:
        parts.append(f"{metadata['bytes'] / 1e6:.1f} MB")
    return parts


def per_family_parts(metadata: dict[str, Any]) -> list[str]:
    """'targets muq 24, mert 24 · rejected 1' from embed_audio's per-family counts."""
    counts: dict[str, dict[str, Any]] = {"targets": {}, "rejected": {}}
    for key, value in metadata.items():
        match = FAMILY_COUNT.match(key)
        if match:
            counts[match["what"]][match["family"]] = value
    parts = []
    if counts["targets"]:
        parts.append("targets " + ", ".join(f"{f} {_number(v)}" for f, v in sorted(counts["targets"].items())))
    if counts["rejected"] and "rejected" not in metadata:
        parts.append(f"rejected {_number(sum(counts['rejected'].values()))}")
    return parts


def retrieval_parts(metadata: dict[str, Any]) -> list[str]:
    """evaluate logs "<family>/text_to_audio/R@1" etc.: its headline numbers with chance."""
    families = sorted(k.split("/")[0] for k in metadata if k.endswith("/text_to_audio/R@1"))
    parts = []
    for family in families:
        r1 = metadata[f"{family}/text_to_audio/R@1"]
        chance = metadata.get(f"{family}/chance/R@1")
        mrr = metadata.get(f"{family}/text_to_audio/MRR")
        text = f"text→audio R@1 {_number(r1)}"
        text += f" (chance {_number(chance)})" if chance is not None else ""
        text += f" · MRR {_number(mrr)}" if mrr is not None else ""
        parts.append(text)
    return parts


def _number(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))  # kfp stores every metadata number as a float
    return f"{value:.3f}" if isinstance(value, float) else str(value)


# -- where output goes ----------------------------------------------------------------------
class TaskLog:
    """A log file fed by whatever one task's thread writes, line by line, colours stripped.

    Progress events (musictext.logs.progress_events) go to ``on_progress``; the file gets one
    every LOGGED_PROGRESS_S per bar and the bar's last one.
    """

    def __init__(self, path: Path, on_progress: Callable[[dict], None] | None = None):
        self.path = path
        self._file = path.open("a", encoding="utf-8", buffering=1)  # readable while it runs
        self._on_progress = on_progress
        self._partial = ""
        self._lock = threading.Lock()
        self._progress_logged: dict[str, float] = {}

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                self._write_line(line)
        return len(text)

    def _write_line(self, line: str) -> None:
        event = parse_progress_event(line)
        if event is None:
            self._file.write(ANSI_ESCAPE.sub("", line) + "\n")
            return
        if self._on_progress:
            self._on_progress(event)
        now = time.monotonic()
        if event.get("done") or now - self._progress_logged.get(event["desc"], -math.inf) >= LOGGED_PROGRESS_S:
            self._progress_logged[event["desc"]] = now
            self._file.write(f"progress: {format_progress(event)}\n")

    def close(self) -> None:
        with self._lock:
            if self._partial:
                self._write_line(self._partial)
                self._partial = ""
            self._file.close()

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        """The last ``n`` lines before kfp's closing status line, rule and blank lines."""
        with self.path.open(encoding="utf-8", errors="replace") as f:
            lines = [line.rstrip() for line in collections.deque(f, maxlen=n + KFP_EPILOGUE_LINES)]
        while lines and (not lines[-1].strip("- ") or "finished with status" in lines[-1]):
            lines.pop()
        return lines[-n:]


class RoutedStream(io.TextIOBase):
    """sys.stdout or sys.stderr while kfp.local runs: each thread's writes go to the log of the
    task that thread runs (kfp prints a task's subprocess output from the task's own thread),
    other writes to the pipeline log; with ``echo`` they also reach the terminal."""

    def __init__(self, current: threading.local, default: TaskLog, echo: TextIO | None = None):
        self._current = current
        self._default = default
        self._echo = echo

    def write(self, text: str) -> int:
        (getattr(self._current, "log", None) or self._default).write(text)
        if self._echo:
            self._echo.write(text)
        return len(text)

    def flush(self) -> None:
        if self._echo:
            self._echo.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


@contextlib.contextmanager
def routed_to(current: threading.local, task_log: TaskLog) -> Iterator[None]:
    """This thread's output goes to ``task_log`` for the duration."""
    previous = getattr(current, "log", None)
    current.log = task_log
    try:
        yield
    finally:
        current.log = previous


@contextlib.contextmanager
def capture_kfp_output(pipeline_log: Path, echo: bool) -> Iterator[threading.local]:
    """Route stdout, stderr and the root logger per thread (see RoutedStream); yield the
    thread-local whose ``log`` names the current thread's task log. Restores all on exit.

    kfp.local logs through root-logger handlers it swaps in per task (on sys.stdout) and prints
    through a builtins.print it swaps too; with two tasks in threads those swaps race and can
    leave its indenting print behind, so builtins.print is put back as well.
    """
    current = threading.local()
    default = TaskLog(pipeline_log)
    out = RoutedStream(current, default, sys.stdout if echo else None)
    err = RoutedStream(current, default, sys.stderr if echo else None)
    root = logging.getLogger()
    saved = (sys.stdout, sys.stderr, builtins.print, root.handlers[:], root.level)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    sys.stdout, sys.stderr = out, err
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield current
    finally:
        sys.stdout, sys.stderr, builtins.print, root.handlers[:], level = saved
        root.setLevel(level)
        default.close()


@contextlib.contextmanager
def kfp_local_hooks(wrap: Callable[[Callable], Callable], run_name: str, reused: list[str]) -> Iterator[None]:
    """Three kfp.local module attributes (looked up at call time) swapped for the duration;
    kfp 2.17 has no public hooks for these, and this is the one place that patches kfp.

    - task_dispatcher.run_single_task_implementation, through ``wrap(original)``: both DAG
      orchestrators run every container task attempt through it, in the task's thread; its
      arguments name the task and its result holds the outputs.
    - executor_input_utils.get_local_pipeline_resource_name returns "<pipeline>-<run_name>"
      instead of "<pipeline>-<timestamp>": every task's output dir (pipeline/<that>/...) keeps its
      path across a resume, so an unfinished task reruns where it left off (training finds its
      checkpoints) and the cache keys, which hold upstream artifacts' paths, match.
    - cache.LocalCache.get: each key the cache answers (a task skipped) goes to ``reused``.
    """
    from kfp.local import cache, executor_input_utils, task_dispatcher

    original_get = cache.LocalCache.get

    def counted_get(self, key: str):
        found = original_get(self, key)
        if found is not None:
            reused.append(key)
        return found

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(task_dispatcher, "run_single_task_implementation",
                                              wrap(task_dispatcher.run_single_task_implementation)))
        stack.enter_context(mock.patch.object(executor_input_utils, "get_local_pipeline_resource_name",
                                              lambda pipeline_name: f"{pipeline_name}-{run_name}"))
        stack.enter_context(mock.patch.object(cache.LocalCache, "get", counted_get))
        yield


# -- the terminal ---------------------------------------------------------------------------
@dataclass
class Running:
    label: str
    started: float
    progress: str = ""
    last_line: float = field(default_factory=time.monotonic)


class Console:
    """The terminal during a local run: a line as each task starts and ends; on a TTY also a
    live line with the running tasks' progress, without one a progress line every
    PIPED_PROGRESS_S per task."""

    def __init__(self, stream: TextIO, live: bool | None = None):
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self._t0 = time.monotonic()
        self._running: dict[str, Running] = {}
        self._lock = threading.RLock()
        self._status_shown = False
        self._stop = threading.Event()
        if self.live:
            threading.Thread(target=self._tick, daemon=True, name="musictext-console").start()

    def line(self, text: str) -> None:
        with self._lock:
            self._clear_status()
            self.stream.write(text + "\n")
            self._draw_status()
            self.stream.flush()

    def started(self, key: str, label: str) -> None:
        with self._lock:
            self._running[key] = Running(label, time.monotonic())
            self.line(f"{self._clock()} ▶ {label}")

    def finished(self, key: str, summary: str) -> None:
        with self._lock:
            task = self._running.pop(key)
            seconds = time.monotonic() - task.started
            self.line(f"{self._clock()} ✓ {task.label:<36} {seconds:6.1f} s  {summary}".rstrip())

    def failed(self, key: str, log_path: Path, tail: list[str]) -> None:
        with self._lock:
            task = self._running.pop(key)
            seconds = time.monotonic() - task.started
            self.line(f"{self._clock()} ✗ {task.label} FAILED after {seconds:.1f} s; the end of its log:")
            for text in tail:
                self.line(f"    │ {text}")
            self.line(f"    log: {log_path}")

    def progress(self, key: str, event: dict) -> None:
        with self._lock:
            task = self._running.get(key)
            if task is None:
                return
            task.progress = "" if event.get("done") else format_progress(event)
            now = time.monotonic()
            if self.live:
                self._clear_status()
                self._draw_status()
                self.stream.flush()
            elif task.progress and now - task.last_line >= PIPED_PROGRESS_S:
                task.last_line = now
                self.line(f"{self._clock()} … {task.label}: {task.progress}")

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._clear_status()
            self.stream.flush()

    def _clock(self) -> str:
        minutes, seconds = divmod(int(time.monotonic() - self._t0), 60)
        return f"{minutes:02d}:{seconds:02d}"

    def _status_text(self) -> str:
        now = time.monotonic()
        parts = [f"{t.label} {now - t.started:.0f}s {t.progress}".rstrip() for t in self._running.values()]
        width = shutil.get_terminal_size((100, 24)).columns - 1
        return ("⋯ " + " | ".join(parts))[:width]

    def _draw_status(self) -> None:
        if self.live and self._running:
            self.stream.write(self._status_text())
            self._status_shown = True

    def _clear_status(self) -> None:
        if self._status_shown:
            self.stream.write("\r\x1b[K")
            self._status_shown = False

    def _tick(self) -> None:
        while not self._stop.wait(1.0):  # elapsed seconds move even without progress events
            with self._lock:
                self._clear_status()
                self._draw_status()
                self.stream.flush()


# -- running and reporting tasks ------------------------------------------------------------
@dataclass
class TaskFailure:
    label: str
    log: Path


class PipelineFailed(RuntimeError):
    """A task of a local run failed; the terminal has shown the end of its log."""

    def __init__(self, failure: TaskFailure):
        super().__init__(f"task {failure.label!r} failed; its log: {failure.log}")
        self.failure = failure


class TaskReporter:
    """Runs each kfp.local task with its output in logs/<task>.log and reports it on the console."""

    def __init__(self, logs_dir: Path, console: Console, current: threading.local, names: dict[str, str]):
        self.logs_dir = logs_dir
        self.console = console
        self.current = current
        self.names = names
        self.failures: list[TaskFailure] = []
        self.ran = 0  # task attempts run (tasks the cache answered never reach run())

    def wrap(self, run_task: Callable) -> Callable:
        signature = inspect.signature(run_task)

        @functools.wraps(run_task)
        def run_reported(*args, **kwargs):
            call = signature.bind(*args, **kwargs).arguments
            component, resource = call["component_name"], call["pipeline_resource_name"]
            label = task_label(self.names.get(component, component), resource, call["arguments"])
            return self.run(task_log_name(component, resource), label, lambda: run_task(*args, **kwargs))

        return run_reported

    def run(self, name: str, label: str, execute: Callable[[], tuple[dict, Any]]) -> tuple[dict, Any]:
        from kfp.local import status

        path = self.logs_dir / f"{name}.log"
        earlier = path.exists()  # an attempt that was killed: this one's output follows it
        task_log = TaskLog(path, functools.partial(self.console.progress, name))
        if earlier:
            task_log.write(f"\n===== {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC: rerun on resume =====\n")
        self.ran += 1
        self.console.started(name, label)
        try:
            with routed_to(self.current, task_log):
                outputs, task_status = execute()
        except BaseException:
            task_log.write(traceback.format_exc())
            self.report_failure(name, label, task_log)
            raise
        if task_status == status.Status.SUCCESS:
            write_metadata_only_artifacts(outputs)
            task_log.close()
            self.console.finished(name, summarize_outputs(outputs))
        else:
            self.report_failure(name, label, task_log)
        return outputs, task_status

    def report_failure(self, name: str, label: str, task_log: TaskLog) -> None:
        task_log.close()
        self.failures.append(TaskFailure(label, task_log.path))
        self.console.failed(name, task_log.path, task_log.tail())


def write_metadata_only_artifacts(outputs: dict[str, Any]) -> None:
    """Give each output artifact that has no file (evaluate's Metrics: metadata only) one with
    its metadata as JSON: kfp.local's cache takes an artifact without a file for a lost one, and
    would rerun its task on every resume."""
    from kfp import dsl

    for value in outputs.values():
        if isinstance(value, dsl.Artifact) and value.path and not os.path.exists(value.path):
            Path(value.path).write_text(json.dumps(value.metadata, indent=1, sort_keys=True))


def run_pipeline_locally(
    params: dict[str, Any],
    runs_dir: str | Path = "runs",
    run_id: str | None = None,
    verbose: bool = False,
    stream: TextIO | None = None,
    pipeline_name: str = "musictext_pipeline",
    resume: bool = False,
) -> Path:
    """Run the pipeline through kfp.local.SubprocessRunner; return runs/<run-id>/.

    Task output goes to runs/<run-id>/logs/; ``stream`` (default stdout) gets one line per task
    start and end. ``verbose`` also streams everything kfp.local prints. Raises PipelineFailed
    when a task fails, RunError when the run cannot start or resume as asked. ``pipeline_name``:
    a pipeline function of ``musictext_kfp.musictext_pipeline`` (``fanout_dry_run`` writes its
    shards' counts to dry_run.json instead of the deliverables).

    ``resume``: continue run ``run_id`` (default: the newest unfinished one) with the parameters
    it started with; its finished tasks are taken from kfp.local's cache, the others rerun.
    """
    from musictext import storage
    from musictext.params import check_run_params
    from musictext_kfp import musictext_pipeline as module

    pipeline = getattr(module, pipeline_name)
    runs_dir = Path(runs_dir).resolve()
    if resume:
        run_dir = resumable_run(runs_dir, run_id)
        params = resumed_params(run_dir, pipeline, params)
    else:
        params = effective_params(pipeline, params)
    try:
        check_run_params(params)
    except ValueError as bad:
        raise RunError(str(bad)) from bad
    if not resume:
        run_dir = new_run_dir(runs_dir, run_id)
    console = Console(stream or sys.stdout)
    try:
        with run_lock(run_dir):
            if resume:
                prepare_resume(run_dir, console)
            else:
                storage.write_json(str(run_dir / PARAMS_FILE), params)
            task = run_in(run_dir, pipeline, params, verbose, console, resume)
            publish_run(run_dir, task)
    finally:
        console.close()
    point_latest(runs_dir, run_dir)
    return run_dir


def prepare_resume(run_dir: Path, console: Console) -> None:
    """What a killed attempt left: its processes (if its watchdog died too) and temporaries."""
    processes = kill_run_processes(run_dir)
    temporaries = remove_temporaries(run_dir)
    console.line(f"resuming run {run_dir.name}: {processes} leftover processes ended, "
                 f"{temporaries} temporaries removed")


def run_in(run_dir: Path, pipeline, params: dict[str, Any], verbose: bool, console: Console, resume: bool):
    """kfp.local runs ``pipeline`` in ``run_dir`` with its cache on; returns its output task."""
    from kfp import local

    logs_dir = run_dir / LOGS_DIR
    logs_dir.mkdir(exist_ok=True)
    # The components' base image is ours and its package is installed here: that is the point.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
    # Accelerator, node-pool and display-name settings are for the cluster; locally they are no-ops.
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    (run_dir / TMP_DIR).mkdir(exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(run_dir / PIPELINE_DIR),
        workspace_root=str(run_dir / TMP_DIR / "kfp-workspace"),
        raise_on_error=True,
        enable_caching=True,
        cache_root=str(run_dir / PIPELINE_DIR / KFP_CACHE_DIR),
    )
    console.line(f"local run {run_dir}; task logs in {logs_dir}/")
    reused: list[str] = []
    run_env = {RUN_ENV: str(run_dir), "TMPDIR": str(run_dir / TMP_DIR)}
    with watched(run_dir), stopping_on_signals(run_dir), mock.patch.dict(os.environ, run_env), \
            environment_defaults(task_environment(verbose)), \
            capture_kfp_output(logs_dir / PIPELINE_LOG, echo=verbose) as current:
        reporter = TaskReporter(logs_dir, console, current, display_names(pipeline))
        with kfp_local_hooks(reporter.wrap, run_dir.name, reused):
            task = run_reporting_failures(lambda: pipeline(**params), reporter)
    if resume:
        console.line(f"resumed run {run_dir.name}: {len(reused)} tasks reused, {reporter.ran} run")
    return task


def publish_run(run_dir: Path, task) -> None:
    """The run's results at its top level (metrics.json or dry_run.json last: the run is then
    finished), and no temporary left."""
    from musictext import storage
    from musictext.report.assemble import link_or_copy

    remove_temporaries(run_dir)
    if not hasattr(task.output, "path"):  # a parameter output (the dry run's shard counts)
        storage.write_json(str(run_dir / DRY_RUN_FILE), task.output)
        return
    out = Path(task.output.path)
    for name in DELIVERABLES:
        if (out / name).exists():
            target = run_dir / name
            if target.is_dir():  # an earlier attempt's, which may be part-made
                shutil.rmtree(target)
            target.unlink(missing_ok=True)
            link_or_copy(out / name, target)


def run_reporting_failures(run: Callable[[], Any], reporter: TaskReporter) -> Any:
    """kfp.local raises a generic RuntimeError when a task fails: name that task instead."""
    try:
        return run()
    except Exception as exc:
        if reporter.failures:
            raise PipelineFailed(reporter.failures[0]) from exc
        raise
