"""What `musictext run --local` shows and logs, piece by piece (the whole run: test_local_e2e.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from musictext.logs import (
    PROGRESS_EVENTS_ENV,
    format_progress,
    parse_progress_event,
    progress,
    progress_events,
)
from musictext_kfp.local import (
    DRY_RUN_FILE,
    PARAMS_FILE,
    TMP_DIR,
    Console,
    RoutedStream,
    RunError,
    TaskLog,
    capture_kfp_output,
    new_run_dir,
    point_latest,
    remove_temporaries,
    resumable_run,
    resumed_params,
    routed_to,
    run_lock,
    run_processes,
    summarize_outputs,
    task_label,
    task_log_name,
    write_metadata_only_artifacts,
)


def events_in(text: str) -> list[dict]:
    return [e for e in map(parse_progress_event, text.splitlines()) if e is not None]


def test_progress_events_start_throttle_and_end(capsys):
    assert list(progress_events(range(5), "epoch 1", interval_s=3600)) == [0, 1, 2, 3, 4]
    events = events_in(capsys.readouterr().err)
    # Start and end only: the interval was never reached.
    assert [(e["n"], e["total"], e["done"]) for e in events] == [(0, 5, False), (5, 5, True)]
    assert format_progress(events[-1]) == "epoch 1 100% 5/5"


def test_progress_events_mark_an_early_stop_done(capsys):
    for i in progress_events(iter(range(10)), "clip tracks", interval_s=0.0):
        if i == 2:
            break
    events = events_in(capsys.readouterr().err)
    assert events[-1]["done"] and events[-1]["n"] == 2 and events[-1]["total"] is None
    assert format_progress(events[-1]) == "clip tracks 2"


def test_progress_switches_to_events_when_the_runner_asks(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_EVENTS_ENV, "1")
    assert list(progress([1, 2], desc="tokenize")) == [1, 2]
    assert events_in(capsys.readouterr().err)[-1]["desc"] == "tokenize"


def test_parse_progress_event_ignores_ordinary_lines():
    assert parse_progress_event("epoch 1: 100%|██████████| 1/1") is None
    assert parse_progress_event("@@musictext-progress {not json") is None


def test_task_log_lines_colours_and_progress(tmp_path):
    seen = []
    log = TaskLog(tmp_path / "t.log", seen.append)
    log.write("partial ")
    log.write("line\n\x1b[96m'clip'\x1b[0m done\n")
    for n in range(3):  # three events of one bar within LOGGED_PROGRESS_S: the first one is logged
        log.write(f'    @@musictext-progress {{"desc": "d", "n": {n}, "total": 9}}\n')
    log.write('@@musictext-progress {"desc": "d", "n": 9, "total": 9, "done": true}\n')
    log.close()
    lines = (tmp_path / "t.log").read_text().splitlines()
    assert lines == ["partial line", "'clip' done", "progress: d 0% 0/9", "progress: d 100% 9/9"]
    assert [e["n"] for e in seen] == [0, 1, 2, 9]


def test_task_log_tail_skips_kfp_epilogue(tmp_path):
    log = TaskLog(tmp_path / "t.log")
    log.write("".join(f"line {i}\n" for i in range(100)))
    log.write("ValueError: boom\n\n\n12:00:00.000 - ERROR - Task 'x' finished with status FAILURE\n" + "-" * 80 + "\n")
    log.close()
    tail = log.tail(5)
    assert tail == ["line 96", "line 97", "line 98", "line 99", "ValueError: boom"]


def test_routed_stream_sends_each_thread_to_its_task_log(tmp_path):
    current = threading.local()
    default = TaskLog(tmp_path / "pipeline.log")
    logs = {name: TaskLog(tmp_path / f"{name}.log") for name in ("a", "b")}
    out = RoutedStream(current, default)

    def task(name):
        with routed_to(current, logs[name]):
            for i in range(50):
                out.write(f"{name} {i}\n")

    threads = [threading.Thread(target=task, args=(name,)) for name in logs]
    for t in threads:
        t.start()
    out.write("orchestrator\n")
    for t in threads:
        t.join()
    for log in [default, *logs.values()]:
        log.close()
    for name in logs:
        assert (tmp_path / f"{name}.log").read_text() == "".join(f"{name} {i}\n" for i in range(50))
    assert (tmp_path / "pipeline.log").read_text() == "orchestrator\n"


def test_capture_restores_what_kfp_local_swaps(tmp_path):
    import builtins
    import logging

    root = logging.getLogger()
    before = (sys.stdout, sys.stderr, builtins.print, root.handlers[:], root.level)
    with capture_kfp_output(tmp_path / "pipeline.log", echo=False):
        print("to the pipeline log")
        logging.getLogger("kfp-like").info("a record")
        builtins.print = lambda *a, **k: None  # what kfp.local's racing indented_print can leave
    assert (sys.stdout, sys.stderr, builtins.print, root.handlers, root.level) == before
    text = (tmp_path / "pipeline.log").read_text()
    assert "to the pipeline log" in text and "a record" in text


def test_task_names_and_labels():
    nested = "musictext-2026/for-loop-2-iteration-1"
    assert task_log_name("comp-train-2", nested) == "train-2.1"
    assert task_log_name("comp-list-sources", "musictext-2026") == "list-sources"
    assert task_label("train stage 2", nested, {"family": "mert"}) == "train stage 2 [mert]"
    assert task_label("clip", "musictext-2026/for-loop-1-iteration-3", {}) == "clip [#3]"
    assert task_label("report", "musictext-2026", {}) == "report"


def test_summaries_pick_the_numbers_that_matter():
    from kfp import dsl

    clips = dsl.Dataset(name="clips", metadata={"tracks": 24.0, "clips": 23.0, "rejected": 1.0,
                                                "sample_rates": [24000.0], "clip_seconds": 6.0})
    assert summarize_outputs({"clips": clips}) == "tracks 24 · clips 23 · rejected 1"
    embedded = dsl.Dataset(name="targets", metadata={"mert_targets": 23.0, "muq_rejected": 0.0,
                                                     "muq_targets": 24.0, "mert_rejected": 1.0})
    assert summarize_outputs({"targets": embedded}) == "targets mert 23, muq 24 · rejected 1"
    metrics = dsl.Metrics(name="metrics")
    for key, value in {"text_to_audio/R@1": 0.5, "chance/R@1": 0.25, "text_to_audio/MRR": 0.625,
                       "audio_to_text/R@1": 0.0}.items():
        metrics.log_metric(f"muq/{key}", value)
    summary = summarize_outputs({"evaluation": dsl.Dataset(name="e"), "metrics": metrics})
    assert summary == "text→audio R@1 0.500 (chance 0.250) · MRR 0.625"
    assert summarize_outputs({"Output": [{"shard": 0}, {"shard": 1}]}) == "shards 2"


def test_console_without_tty_prints_start_end_and_failure():
    stream = io.StringIO()
    console = Console(stream, live=False)
    console.started("clip.0", "clip [#0]")
    console.progress("clip.0", {"desc": "clip tracks", "n": 1, "total": 9})  # < PIPED_PROGRESS_S
    console.finished("clip.0", "clips 9")
    console.started("train.0", "train [muq]")
    log_path = Path("/runs/x/logs/train.0.log")
    console.failed("train.0", log_path, ["a", "b"])
    console.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 7, lines
    assert lines[0].endswith("▶ clip [#0]") and "✓ clip [#0]" in lines[1] and lines[1].endswith("clips 9")
    assert "✗ train [muq] FAILED" in lines[3]
    assert lines[4:] == ["    │ a", "    │ b", f"    log: {log_path}"]


def test_console_on_a_tty_redraws_one_status_line():
    stream = io.StringIO()
    console = Console(stream, live=True)
    console.started("clip.0", "clip [#0]")
    console.progress("clip.0", {"desc": "clip tracks", "n": 3, "total": 9})
    console.finished("clip.0", "clips 9")
    console.close()
    text = stream.getvalue()
    assert "clip [#0] 0s clip tracks 33% 3/9" in text
    assert "\r\x1b[K" in text  # the status line is erased before the next permanent line
    assert text.count("\n") == 2  # the status line never adds a line

    assert Console(io.StringIO()).live is False  # StringIO is no TTY: lines only


# -- a run's directory and processes (the whole kill/resume cycle: tests/faults/) -------------
# A stand-in runner: the watchdog and signal handling of a local run around a child that left
# for its own session (as torchrun does), then it waits to be killed.
FAKE_RUNNER = """
import os, subprocess, sys, time
from pathlib import Path
from musictext_kfp.local import RUN_ENV, stopping_on_signals, watched
run_dir = Path(sys.argv[1])
with watched(run_dir), stopping_on_signals(run_dir):
    env = dict(os.environ, **{RUN_ENV: str(run_dir)})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], env=env,
                             start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(300)
"""


def start_fake_runner(run_dir: Path) -> tuple[subprocess.Popen, int]:
    runner = subprocess.Popen([sys.executable, "-c", FAKE_RUNNER, str(run_dir)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    child = int(runner.stdout.readline())
    assert run_processes(run_dir) == [child]
    return runner, child


def wait_gone(run_dir: Path, timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := run_processes(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_kill_9_of_the_runner_ends_a_child_in_its_own_session(tmp_path):
    runner, _ = start_fake_runner(tmp_path)
    runner.kill()  # SIGKILL: no handler runs; the watchdog sees its pipe close
    runner.wait()
    assert wait_gone(tmp_path) == []  # the child too (a zombie shows no environment)


def test_sigterm_of_the_runner_ends_its_processes_and_exits_nonzero(tmp_path):
    runner, _ = start_fake_runner(tmp_path)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    assert f"SIGTERM: stopped run {tmp_path.name} (1 processes ended)" in runner.stderr.read()
    assert wait_gone(tmp_path, 1.0) == []


class Pipeline:
    """What resumed_params reads of a pipeline function: its inputs and their defaults."""

    def __init__(self, **defaults):
        inputs = {k: types.SimpleNamespace(default=v) for k, v in defaults.items()}
        self.component_spec = types.SimpleNamespace(inputs=inputs)


def test_a_run_id_is_used_once(tmp_path):
    assert new_run_dir(tmp_path, "a").is_dir()
    with pytest.raises(RunError, match="run 'a' already exists .* --resume a"):
        new_run_dir(tmp_path, "a")


def test_resume_finds_the_newest_unfinished_run(tmp_path):
    for name, finished in (("old", False), ("done", True), ("new", False), ("newest-done", True)):
        (tmp_path / name).mkdir()
        (tmp_path / name / PARAMS_FILE).write_text("{}")
        if finished:
            (tmp_path / name / "metrics.json").write_text("{}")
        time.sleep(0.01)
    point_latest(tmp_path, tmp_path / "newest-done")
    assert resumable_run(tmp_path, None).name == "new"
    assert resumable_run(tmp_path, "done").name == "done"  # by name, finished or not
    with pytest.raises(RunError, match="no run 'nope' to resume"):
        resumable_run(tmp_path, "nope")
    for name in ("old", "new"):
        (tmp_path / name / DRY_RUN_FILE).write_text("[]")
    with pytest.raises(RunError, match="no unfinished run"):
        resumable_run(tmp_path, None)


def test_resume_keeps_the_parameters_it_started_with(tmp_path):
    pipeline = Pipeline(corpus_size=400, seed=0, families=["muq", "mert"])
    (tmp_path / PARAMS_FILE).write_text(json.dumps({"corpus_size": 24, "seed": 0, "families": ["muq"]}))
    saved = {"corpus_size": 24, "seed": 0, "families": ["muq"]}
    assert resumed_params(tmp_path, pipeline, {}) == saved
    assert resumed_params(tmp_path, pipeline, {"corpus_size": 24}) == saved  # the same: fine
    with pytest.raises(RunError, match=r"other parameters \(corpus_size: 24 then, 40 now; seed: 0 then, 1 now\)"):
        resumed_params(tmp_path, pipeline, {"corpus_size": 40, "seed": 1})
    with pytest.raises(RunError, match="ran another pipeline"):
        resumed_params(tmp_path, Pipeline(corpus_size=400, seed=0), {})


def test_one_runner_per_run(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(RunError, match="being run by another process"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released
        pass


def test_temporaries_are_found_and_removed(tmp_path):
    keep = [tmp_path / "pipeline" / "x" / "clips.parquet", tmp_path / "pipeline" / ".kfp_cache" / "ab12.json"]
    gone = [tmp_path / "pipeline" / "x" / "clips.parquet.tmp-0a1b2c3d",
            tmp_path / "pipeline" / ".kfp_cache" / ".kfp_cache_x1y2.tmp", tmp_path / TMP_DIR / "kfp-workspace" / "f"]
    for path in keep + gone:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert remove_temporaries(tmp_path) == 3
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)
    assert not (tmp_path / TMP_DIR).exists()


def test_latest_is_replaced_in_one_step(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        point_latest(tmp_path, tmp_path / name)
        assert os.readlink(tmp_path / "latest") == name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "latest"]


def test_cli_refuses_a_used_run_id_or_two_run_names(tmp_path, caplog):
    import logging

    from musictext_kfp.cli import main as cli_main

    (tmp_path / "x").mkdir()
    with caplog.at_level(logging.ERROR, logger="musictext"):
        assert cli_main(["run", "--local", "--runs-dir", str(tmp_path), "--run-id", "x"]) == 2
        assert cli_main(["run", "--local", "--runs-dir", str(tmp_path), "--run-id", "x", "--resume", "y"]) == 2
        assert cli_main(["run", "--local", "--runs-dir", str(tmp_path), "--resume"]) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert "run 'x' already exists" in messages[0] and "--resume x" in messages[0]
    assert "name two runs" in messages[1]
    assert "no unfinished run to resume" in messages[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # nothing made


def test_metadata_only_artifacts_get_a_file_for_the_cache(tmp_path):
    from kfp import dsl

    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    metrics.log_metric("muq/R@1", 0.5)
    dataset = dsl.Dataset(name="d", uri=str(tmp_path / "d"))
    dataset_file = Path(dataset.path)
    dataset_file.write_text("kept")
    write_metadata_only_artifacts({"metrics": metrics, "d": dataset, "Output": [1, 2]})
    assert json.loads((tmp_path / "metrics").read_text()) == {"muq/R@1": 0.5}
    assert dataset_file.read_text() == "kept"


def test_bad_parameters_are_refused_before_a_run_starts(tmp_path, caplog):
    """Every bad parameter named in one message, before any task, run dir or download."""
    import logging

    from musictext_kfp.cli import main as cli_main

    argv = ["run", "--local", "--runs-dir", str(tmp_path), "--sources", "no-such-source", "--clip-seconds", "-1",
            "--profile", "bogus", "--epochs-stage1", "-1"]
    with caplog.at_level(logging.ERROR, logger="musictext"):
        assert cli_main(argv) == 2
    message = " ".join(r.getMessage() for r in caplog.records)
    for name in ("no-such-source", "clip_seconds", "bogus", "epochs_stage1"):
        assert name in message, (name, message)
    assert not any(tmp_path.iterdir())  # no run dir, nothing listed
