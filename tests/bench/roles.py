"""Benchmarks that measure a process's own peak memory run each step in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_role(module: str, role: str, payload: dict, **env: str) -> dict:
    """``python -m module --role role --payload JSON`` in a fresh interpreter (``env`` added to
    this one's); its result comes back as the last stdout line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT)]),
           "MUSICTEXT_PROGRESS": "0", **env}
    out = subprocess.run([sys.executable, "-m", module, "--role", role, "--payload", json.dumps(payload)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{role} step failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])
