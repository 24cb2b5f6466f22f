"""Shared by the fault suite: `musictext run --local` as a subprocess, killed at a chosen task.

A kill is aimed by watching the run: a task's log (runs/<id>/logs/<task>.log) appears as the task
starts, then (optionally) a line in it, then the task's processes; the runner is SIGKILLed then,
so no fault-injection code lives in the library.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from musictext_kfp.local import KFP_CACHE_DIR, KILL_SETTLE_S, PIPELINE_DIR, run_processes

# The smallest run that still has every stage: 2 shards of 12 tracks, one family; stage 1 has two
# epochs so that a kill after its first checkpoint leaves something to resume from.
TINY = [
    "--corpus-size", "24", "--shard-size", "12", "--families", "music2latent", "--clip-seconds", "4",
    "--epochs-stage1", "2", "--epochs-stage2", "1", "--batch-size", "8",
]
DRY_TINY = ["--corpus-size", "24", "--shard-size", "12"]
RUN_TIMEOUT_S = 1200
SETTLE_S = KILL_SETTLE_S + 10.0  # the watchdog's kill window plus its start
RESUMED = re.compile(r"resumed run (\S+): (\d+) tasks reused, (\d+) run")


def run_command(runs: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "musictext_kfp.cli", "run", "--local", "--runs-dir", str(runs), *args]


def run_cli(runs: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(run_command(runs, *args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def leftover_processes(run_dir: Path) -> list[str]:
    """Processes of the run: its environment marker (tasks, torchrun, workers) or its dir in the
    command line (the watchdog)."""
    found = [f"{pid} (run env)" for pid in run_processes(run_dir)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run_dir).encode() in cmdline:
            found.append(f"{entry.name} {b' '.join(cmdline)[:120]!r}")
    return found


def wait_until_no_processes(run_dir: Path, timeout_s: float = SETTLE_S) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := leftover_processes(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def cache_entries(run_dir: Path) -> int:
    """Tasks kfp.local recorded as finished (one entry per task, rewritten if it ran again)."""
    return len(list((run_dir / PIPELINE_DIR / KFP_CACHE_DIR).glob("*.json")))


@dataclass
class Killed:
    run_dir: Path
    output: str  # the killed runner's stdout and stderr
    processes_at_kill: int  # processes of the run (beyond the runner) when it was killed
    returncode: int
    finished_tasks: int  # kfp.local cache entries the killed run left


def wait_for(condition, what: str, proc: subprocess.Popen, out: Path, timeout_s: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}:\n{out.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill_at(runs: Path, run_id: str, task_log: str, args: list[str], line: str | None = None,
            signum: int = signal.SIGKILL) -> Killed:
    """Start a run and send ``signum`` to its runner while ``task_log``'s task runs: once its log
    exists (and holds ``line``) and a process of the run is alive."""
    run_dir = runs / run_id
    out = runs / f"{run_id}.killed.out"
    log = run_dir / "logs" / f"{task_log}.log"
    with out.open("w") as fh:
        proc = subprocess.Popen(run_command(runs, "--run-id", run_id, *args), stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: log.exists() and (line is None or line in log.read_text(errors="replace")),
                 f"{log.name}" + (f" to say {line!r}" if line else ""), proc, out)
        wait_for(lambda: run_processes(run_dir), f"a process of {task_log}", proc, out, timeout_s=60)
        processes = len(run_processes(run_dir))
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return Killed(run_dir, out.read_text(), processes, proc.returncode, cache_entries(run_dir))


@pytest.fixture(scope="session")
def reference_metrics(tmp_path_factory) -> dict:
    """metrics.json of an uninterrupted TINY run (same seed), once per session."""
    runs = tmp_path_factory.mktemp("reference")
    done = run_cli(runs, "--run-id", "reference", *TINY)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((runs / "reference" / "metrics.json").read_text())
