"""`musictext run --local --dry-run`: the fan-out walked with each shard's records checked,
nothing downloaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.datasets.musiccaps import write_full_size_csv


def test_dry_run_walks_every_shard_without_audio(tmp_path):
    meta = tmp_path / "musiccaps"
    write_full_size_csv(meta / "musiccaps-public.csv", rows=60)
    cmd = [sys.executable, "-m", "musictext_kfp.cli", "run", "--local", "--dry-run", "--runs-dir", str(tmp_path / "runs"),
           "--run-id", "dry", "--sources", "musiccaps", "--source-options", f"musiccaps.metadata={meta}",
           "--corpus-size", "1000", "--shard-size", "12"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "MUSICTEXT_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    shards = json.loads((tmp_path / "runs" / "dry" / "dry_run.json").read_text())
    assert len(shards) == 5 and sum(s["records"] for s in shards) == 60
    assert sum(s.get("test", 0) for s in shards) == 60  # the first 2,858 rows of the real CSV are eval rows
    assert "dry run: 5 shards checked, 60 records" in done.stdout
    assert not (tmp_path / "cache").exists() and not list(Path(tmp_path / "runs").rglob("*.flac"))
