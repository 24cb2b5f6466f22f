"""The local backend: ``torchrun --standalone`` as a subprocess on this machine."""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import ClassVar

from pydantic import Field, field_validator

from musictext.train.launch.base import PROGRAM, Backend, LaunchConfig, TrainJobSpec, register_backend

log = logging.getLogger(__name__)

TAIL_LINES = 60


class LocalConfig(LaunchConfig):
    """One node, ``nproc_per_node`` processes; ``timeout_s`` None means no limit."""

    launcher: ClassVar[str] = "local"

    timeout_s: float | None = Field(None, gt=0)

    @field_validator("nnodes")
    @classmethod
    def _one_node(cls, nnodes: int) -> int:
        if nnodes != 1:
            raise ValueError("the local launcher runs one node; use launcher 'trainjob' or 'pytorchjob' for more")
        return nnodes


@register_backend
class LocalBackend(Backend):
    config_class = LocalConfig

    def run(self, job: TrainJobSpec) -> None:
        run_torchrun(job.program_args(), self.config.nproc_per_node, self.config.timeout_s)


def run_torchrun(args: list[str], nproc_per_node: int = 1, timeout_s: float | None = None) -> None:
    """torchrun --standalone as a subprocess; stream its output; raise with the tail on failure."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc-per-node", str(nproc_per_node), "-m", PROGRAM, *args,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    log.info("launching: torchrun --nproc-per-node %d %s %s", nproc_per_node, PROGRAM, _short(args))
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
