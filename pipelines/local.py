"""`musictext run --local`: the same pipeline function, executed by kfp.local on this machine.

Outputs land in runs/<run-id>/ (metrics.json, report.html, rejected.json, checkpoints/, the
kfp.local pipeline root with every task's artifacts, and logs/); runs/latest points at the
newest run.

kfp.local prints every task's executor input and full output (~90 lines a task). Here each
task's output goes to runs/<run-id>/logs/<task>.log instead, and the terminal gets one line as
a task starts and one as it ends (with the numbers from its outputs' metadata), a live progress
line on a TTY, and a failed task's log tail. ``verbose`` also streams everything as kfp does.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import functools
import inspect
import io
import json
import logging
import math
import os
import re
import shutil
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

from musictext.logs import PROGRESS_EVENTS_ENV, format_progress, parse_progress_event

DELIVERABLES = ("metrics.json", "report.html", "rejected.json", "checkpoints")
DRY_RUN_FILE = "dry_run.json"
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
    latest = runs_dir / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(run_dir.name)


def effective_params(pipeline, overrides: dict[str, Any]) -> dict[str, Any]:
    """Every pipeline parameter this run used: the pipeline's defaults, then the overrides."""
    inputs = pipeline.component_spec.inputs or {}
    return {**{name: spec.default for name, spec in inputs.items()}, **overrides}


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
def wrapping_each_task(wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    """Run every kfp.local task attempt through ``wrap(original)``.

    kfp 2.17 has no public per-task hook; both of its DAG orchestrators run each container task
    through task_dispatcher.run_single_task_implementation (looked up on the module at call
    time, in the task's thread), whose arguments name the task and whose result holds its
    outputs. This is the one place that patches kfp.
    """
    from kfp.local import task_dispatcher

    original = task_dispatcher.run_single_task_implementation
    task_dispatcher.run_single_task_implementation = wrap(original)
    try:
        yield
    finally:
        task_dispatcher.run_single_task_implementation = original


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

        task_log = TaskLog(self.logs_dir / f"{name}.log", functools.partial(self.console.progress, name))
        self.console.started(name, label)
        try:
            with routed_to(self.current, task_log):
                outputs, task_status = execute()
        except BaseException:
            task_log.write(traceback.format_exc())
            self.report_failure(name, label, task_log)
            raise
        if task_status == status.Status.SUCCESS:
            task_log.close()
            self.console.finished(name, summarize_outputs(outputs))
        else:
            self.report_failure(name, label, task_log)
        return outputs, task_status

    def report_failure(self, name: str, label: str, task_log: TaskLog) -> None:
        task_log.close()
        self.failures.append(TaskFailure(label, task_log.path))
        self.console.failed(name, task_log.path, task_log.tail())


def run_pipeline_locally(
    params: dict[str, Any],
    runs_dir: str | Path = "runs",
    run_id: str | None = None,
    verbose: bool = False,
    stream: TextIO | None = None,
    pipeline_name: str = "musictext_pipeline",
) -> Path:
    """Run the pipeline through kfp.local.SubprocessRunner; return runs/<run-id>/.

    Task output goes to runs/<run-id>/logs/; ``stream`` (default stdout) gets one line per task
    start and end. ``verbose`` also streams everything kfp.local prints. Raises PipelineFailed
    when a task fails. ``pipeline_name``: a pipeline function of ``musictext_kfp.musictext_pipeline``
    (``fanout_dry_run`` writes its shards' counts to dry_run.json instead of the deliverables).
    """
    from kfp import local

    from musictext.report.assemble import link_or_copy
    from musictext_kfp import musictext_pipeline as module

    pipeline = getattr(module, pipeline_name)
    runs_dir = Path(runs_dir).resolve()
    run_dir = runs_dir / (run_id or new_run_id())
    run_dir.mkdir(parents=True, exist_ok=False)
    point_latest(runs_dir, run_dir)
    logs_dir = run_dir / LOGS_DIR
    logs_dir.mkdir()
    # The components' base image is ours and its package is installed here: that is the point.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
    # Accelerator, node-pool and display-name settings are for the cluster; locally they are no-ops.
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(run_dir / "pipeline"),
        raise_on_error=True,
    )
    console = Console(stream or sys.stdout)
    console.line(f"local run {run_dir}; task logs in {logs_dir}/")
    try:
        with environment_defaults(task_environment(verbose)), capture_kfp_output(
            logs_dir / PIPELINE_LOG, echo=verbose
        ) as current:
            reporter = TaskReporter(logs_dir, console, current, display_names(pipeline))
            with wrapping_each_task(reporter.wrap):
                task = run_reporting_failures(lambda: pipeline(**params), reporter)
    finally:
        console.close()
    (run_dir / "params.json").write_text(json.dumps(effective_params(pipeline, params), indent=2))
    if not hasattr(task.output, "path"):  # a parameter output (the dry run's shard counts)
        (run_dir / DRY_RUN_FILE).write_text(json.dumps(task.output, indent=1))
        return run_dir
    out = Path(task.output.path)
    for name in DELIVERABLES:
        if (out / name).exists():
            link_or_copy(out / name, run_dir / name)
    return run_dir


def run_reporting_failures(run: Callable[[], Any], reporter: TaskReporter) -> Any:
    """kfp.local raises a generic RuntimeError when a task fails: name that task instead."""
    try:
        return run()
    except Exception as exc:
        if reporter.failures:
            raise PipelineFailed(reporter.failures[0]) from exc
        raise
