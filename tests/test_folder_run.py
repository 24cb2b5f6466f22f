"""The `folder` source trains end to end: `musictext run --local --sources folder --folder DIR` on
a directory of audio files with a captions.csv (no split column: hashed splits), with metrics on
its held-out files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from musictext.ingest.base import hashed_split

pytestmark = pytest.mark.slow  # ~4 min on 2 cores: make test-all


def test_folder_source_trains_and_reports_held_out_metrics(tmp_path):
    music = tmp_path / "music"
    made = subprocess.run([sys.executable, "tools/make-folder-corpus.py", str(music), "--tracks", "48"],
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    (music / "notes.txt").write_text("not audio")  # ignored: not an audio file
    cmd = [sys.executable, "-m", "musictext_kfp.cli", "run", "--local", "--runs-dir", str(tmp_path / "runs"),
           "--run-id", "folder", "--sources", "folder", "--folder", str(music), "--families", "muq",
           "--clip-seconds", "4", "--epochs-stage1", "2", "--epochs-stage2", "1", "--batch-size", "8"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "runs" / "folder"
    muq = json.loads((run / "metrics.json").read_text())["families"]["muq"]
    # No split column: each file's split is the seeded hash of its path; one clip per file.
    with open(music / "captions.csv", newline="") as fh:
        paths = {row["path"] for row in csv.DictReader(fh)}
    held_out = sum(hashed_split(p, 0) == "test" for p in paths)
    assert held_out >= 2 and muq["n_test"] == held_out
    assert 0.0 <= muq["R@10"] <= 1.0 and muq["chance"]["R@10"] == min(1.0, 10 / held_out)
    assert (run / "checkpoints" / "muq_best_r1.pt").exists()
    report = (run / "report.html").read_text()
    assert "<h2>Data</h2>" in report and ">folder<" in report
