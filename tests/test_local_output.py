"""What `musictext run --local` shows and logs, piece by piece (the whole run: test_local_e2e.py)."""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

from musictext.logs import (
    PROGRESS_EVENTS_ENV,
    format_progress,
    parse_progress_event,
    progress,
    progress_events,
)
from musictext_kfp.local import (
    Console,
    RoutedStream,
    TaskLog,
    capture_kfp_output,
    routed_to,
    summarize_outputs,
    task_label,
    task_log_name,
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
