"""Nothing lost, nothing twice: `musictext run --local` killed (-9) while each stage runs, then
`--resume`d, ends with the metrics of an uninterrupted run, its finished tasks reused, no process
of it left running and no temporary file in its directory."""

from __future__ import annotations

import json
import signal
import time

import pytest

from musictext_kfp.local import temporaries

from .conftest import (
    DRY_TINY,
    RESUMED,
    TINY,
    cache_entries,
    kill_at,
    run_cli,
    wait_until_no_processes,
)


def resume(killed, *args: str) -> tuple[int, int, str]:
    """Resume the killed run; returns (tasks reused, tasks run, output) after the common checks."""
    left = wait_until_no_processes(killed.run_dir)
    assert not left, f"processes of the killed run still alive: {left}"
    finished_before = cache_entries(killed.run_dir)
    done = run_cli(killed.run_dir.parent, "--resume", *args)  # the newest unfinished run
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    match = RESUMED.search(output)
    assert match and match[1] == killed.run_dir.name, output[-3000:]
    reused, ran = int(match[2]), int(match[3])
    assert reused == finished_before  # every task that had finished, and only those
    # Every task once: the killed one and those after it ran, none of the reused ran again.
    assert ran >= 1 and reused + ran == cache_entries(killed.run_dir)
    assert not wait_until_no_processes(killed.run_dir)
    assert not temporaries(killed.run_dir), temporaries(killed.run_dir)
    latest = killed.run_dir.parent / "latest"
    assert latest.resolve() == killed.run_dir.resolve()
    return reused, ran, output


def resume_finished(run_dir, *args: str) -> None:
    """Resuming a finished run reruns nothing: every task comes from the cache."""
    done = run_cli(run_dir.parent, "--resume", run_dir.name, *args)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    match = RESUMED.search(done.stdout)
    assert match and (int(match[2]), int(match[3])) == (cache_entries(run_dir), 0), done.stdout[-3000:]


def report(stage: str, killed, reused: int, ran: int, seconds: float) -> None:
    print(f"\n[kill -9 during {stage}] {killed.finished_tasks} tasks done at the kill, "
          f"{killed.processes_at_kill} processes killed with it; resume: {reused} reused, {ran} run, "
          f"{seconds:.0f} s")


def test_dry_run_killed_during_a_shard_check_resumes(tmp_path):
    """The fast case (~35 s): the fan-out dry run killed while a shard is checked."""
    killed = kill_at(tmp_path, "dry", "check-shard.0", ["--dry-run", *DRY_TINY])
    assert killed.returncode == -signal.SIGKILL
    assert killed.processes_at_kill >= 1
    assert "✓ list sources" in killed.output and "✓ check shard" not in killed.output
    start = time.monotonic()
    reused, ran, _ = resume(killed, "--dry-run")
    assert reused >= 1 and ran >= 2  # the listing reused, both shard checks run
    shards = json.loads((killed.run_dir / "dry_run.json").read_text())
    assert sorted(s["records"] for s in shards) == [12, 12]
    report("check shard (dry run)", killed, reused, ran, time.monotonic() - start)
    resume_finished(killed.run_dir, "--dry-run")


@pytest.mark.slow  # ~35 s; the fast unit twin: tests/test_local_output.py (a stand-in runner)
def test_sigterm_stops_every_process_and_says_how_to_resume(tmp_path):
    killed = kill_at(tmp_path, "term", "check-shard.0", ["--dry-run", *DRY_TINY], signum=signal.SIGTERM)
    assert killed.returncode == 128 + signal.SIGTERM
    assert "SIGTERM: stopped run term" in killed.output and "--resume term" in killed.output
    assert not wait_until_no_processes(killed.run_dir, timeout_s=5.0)
    assert not (tmp_path / "latest").exists()  # only a finished run becomes runs/latest


M2L = "[music2latent]"
# (task log, its console label, a line in its log to wait for): each kill lands while that task runs.
STAGES = [
    ("list-sources", "list sources", None),
    ("download.0", "download [#0]", None),
    ("clip.1", "clip [#1]", None),
    ("embed-audio.0", "embed audio [#0]", None),
    ("merge-shards", "index shards", None),
    ("gather-targets.0", f"gather targets {M2L}", None),
    ("prepare-text.0", f"prepare text {M2L}", None),
    # after epoch 1's checkpoint: the resumed stage continues from it
    ("train.0", f"train stage 1 (InfoNCE) {M2L}", "checkpoint step-"),
    ("train-2.0", f"train stage 2 (InfoNCE+MSE) {M2L}", None),
    ("evaluate.0", f"evaluate {M2L}", None),
    ("export.0", f"export {M2L}", None),
    ("report", "report", None),
]


@pytest.mark.slow  # each case is a whole tiny run plus its resume: ~2.5 min on 2 cores
@pytest.mark.parametrize("task_log,label,line", STAGES, ids=[s[0] for s in STAGES])
def test_killed_during_a_stage_resumes_to_the_same_metrics(tmp_path, reference_metrics, task_log, label, line):
    killed = kill_at(tmp_path, "killed", task_log, TINY, line=line)
    assert killed.returncode == -signal.SIGKILL
    assert killed.processes_at_kill >= 1
    assert f"▶ {label}\n" in killed.output and f"✓ {label} " not in killed.output  # killed while it ran
    start = time.monotonic()
    reused, ran, _ = resume(killed)
    report(label, killed, reused, ran, time.monotonic() - start)
    assert json.loads((killed.run_dir / "metrics.json").read_text()) == reference_metrics
    if task_log == "train.0":
        assert "resumed from" in (killed.run_dir / "logs" / "train.0.log").read_text()
    if task_log == "report":  # every other task had finished: evaluate's metadata-only Metrics too
        resume_finished(killed.run_dir)
