"""A tiny whole-pipeline run through kfp.local, exactly as `musictext run --local` does it."""

from __future__ import annotations

import builtins
import json
import logging
import os
import subprocess
import sys

import pytest

from musictext_kfp.cli import main as cli_main
from musictext.config import FAMILIES, load_family_config

TINY = [
    "--corpus-size", "40", "--shard-size", "20", "--clip-seconds", "4",
    "--epochs-stage1", "1", "--epochs-stage2", "1", "--batch-size", "8",
]
SHARDS = 2  # corpus 40 / shard size 20
SHARD_TASKS = ("download", "clip", "embed-audio")
FAMILY_TASKS = ("gather-targets", "prepare-text", "train", "train-2", "evaluate", "export")
# What a person may see of a local run, stdout and stderr together.
LINE_BUDGET = 120


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The CLI in a process of its own, as a person runs it (its output is no TTY here)."""
    runs = tmp_path_factory.mktemp("runs")
    cmd = [sys.executable, "-m", "musictext_kfp.cli", "run", "--local", "--runs-dir", str(runs),
           "--run-id", "tiny", *TINY]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return runs, done


def expected_task_logs() -> set[str]:
    """One log per task: loop tasks named by their iteration index."""
    return {
        "check-params", "list-sources", "merge-shards", "report",
        *(f"{t}.{i}" for t in SHARD_TASKS for i in range(SHARDS)),
        *(f"{t}.{i}" for t in FAMILY_TASKS for i in range(len(FAMILIES))),
    }


def test_terminal_shows_a_line_per_task_start_and_end(tiny_run):
    runs, done = tiny_run
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= LINE_BUDGET, "\n".join(lines)
    tasks = len(expected_task_logs())
    assert sum("▶ " in line for line in lines) == tasks
    finished = [line for line in lines if "✓ " in line]
    assert len(finished) == tasks
    # The numbers that matter, from the tasks' output metadata.
    assert any("train stage 1 (InfoNCE) [muq]" in line and "valid R@1" in line for line in finished)
    assert any("evaluate [mert]" in line and "text→audio R@1" in line for line in finished)
    assert any("clip [#1]" in line and "clips " in line for line in finished)
    assert "R@1" in done.stdout and "report.html" in done.stdout  # the metrics table and paths
    # kfp.local's executor dumps and the tasks' own output stay in the logs.
    assert "executor_input" not in done.stdout + done.stderr
    assert "@@musictext-progress" not in done.stdout + done.stderr


def test_one_log_per_task(tiny_run):
    runs, _ = tiny_run
    logs = runs / "tiny" / "logs"
    assert {p.stem for p in logs.glob("*.log")} == expected_task_logs() | {"pipeline"}
    train = (logs / "train.0.log").read_text()
    assert "Got executor_input" in train and "progress: epoch 1" in train
    assert "\x1b[" not in train  # kfp's colours stripped


def test_failing_task_shows_its_log_tail_and_path(tmp_path, capsys, caplog):
    """A listing that fails (a folder that is not there) fails its task: its traceback and log
    path reach the terminal. (A bad parameter never gets this far: test_bad_parameter_...)"""
    root = logging.getLogger()
    before = (sys.stdout, builtins.print, root.handlers[:], dict(os.environ))
    argv = ["run", "--local", "--runs-dir", str(tmp_path), "--run-id", "bad", "--sources", "folder",
            "--folder", str(tmp_path / "no-such-folder")]
    with caplog.at_level(logging.ERROR, logger="musictext"):
        assert cli_main(argv) == 1
    out = capsys.readouterr().out
    log = tmp_path / "bad" / "logs" / "list-sources.log"
    assert log.is_file()
    assert "✗ list sources FAILED" in out
    assert "no-such-folder' does not exist" in out  # the tail shows the cause
    assert f"log: {log}" in out
    assert any(str(log) in r.getMessage() and "list sources" in r.getMessage() for r in caplog.records)
    assert len(out.splitlines()) <= 50
    # The run puts back what it and kfp.local swapped: streams, print, logging, environment.
    assert (sys.stdout, builtins.print, root.handlers, dict(os.environ)) == before


def test_run_layout(tiny_run):
    runs, _ = tiny_run
    run = runs / "tiny"
    assert (runs / "latest").resolve() == run.resolve()
    for name in ("metrics.json", "report.html", "rejected.json", "params.json"):
        assert (run / name).is_file(), name
    assert (run / "pipeline").is_dir()  # every task's artifacts, as kfp.local left them
    params = json.loads((run / "params.json").read_text())
    assert params["corpus_size"] == 40 and params["profile"] == "demo"  # override, default


def test_metrics_fields(tiny_run):
    runs, _ = tiny_run
    metrics = json.loads((runs / "tiny" / "metrics.json").read_text())
    assert set(metrics["families"]) == set(FAMILIES)
    for family, m in metrics["families"].items():
        assert m["n_test"] >= 2, family
        for key in ("R@1", "R@5", "R@10", "MRR"):
            assert 0.0 <= m[key] <= 1.0, (family, key)
            assert 0.0 < m["chance"][key] <= 1.0, (family, key)
        # Chance values follow from the number of test items.
        assert m["chance"]["R@1"] == pytest.approx(1.0 / m["n_test"])
        assert m["chance"]["R@10"] == pytest.approx(min(10, m["n_test"]) / m["n_test"])


def test_checkpoints_exported_in_navidrome_format(tiny_run):
    import torch

    runs, _ = tiny_run
    ckpts = runs / "tiny" / "checkpoints"
    for family in FAMILIES:
        cfg = load_family_config(family, "demo")
        path = ckpts / f"{cfg.export.name}_best_r1.pt"
        assert path.is_file(), path
        blob = torch.load(path, map_location="cpu", weights_only=False)
        assert set(blob) == {"config", "text_encoder_state_dict", "projection_state_dict", "metrics"}
        assert blob["config"]["audio_dim"] == cfg.audio.target_dim
        # Each family's save_pretrained folder sits beside its .pt, none overwriting another.
        embedder = ckpts / f"{cfg.export.name}_text_embedder"
        assert (embedder / "config.json").is_file(), embedder
