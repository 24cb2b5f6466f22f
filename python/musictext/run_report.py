"""Assemble one run's deliverables from the per-family task outputs (the pipeline's last step)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from musictext import storage
from musictext.rejects import read_rejections
from musictext.shards import index_rejections

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
REJECTED_JSON = "rejected.json"


def collect_checkpoints(export_dirs: list[str], out_dir: str) -> list[str]:
    """Copy every exported family (``{name}_best_r1.pt`` and its HF folder) to checkpoints/."""
    dest = Path(out_dir) / CHECKPOINTS
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for export_dir in export_dirs:
        for item in sorted(Path(export_dir).iterdir()):
            target = dest / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
            names.append(item.name)
    return names


def assemble_run(
    evaluation_dirs: list[str],
    export_dirs: list[str],
    stage_dirs: list[str],
    clips_index_dir: str,
    out_dir: str,
    html_path: str | None = None,
) -> dict:
    from musictext.eval.report import write_report

    results = [storage.read_json(storage.join(d, "metrics.json")) for d in evaluation_dirs]
    for result, eval_dir in zip(results, evaluation_dirs):
        result.setdefault("artifacts_dir", eval_dir)
    rejected = index_rejections(clips_index_dir)
    for stage_dir in stage_dirs:
        rejected.extend(read_rejections(stage_dir))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    checkpoints = collect_checkpoints(export_dirs, out_dir)
    storage.write_json(storage.join(out_dir, REJECTED_JSON), rejected)
    write_report(results, out_dir, rejected=rejected)
    if html_path:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(out_dir) / "report.html", html_path)
    log.info("run assembled in %s: %d families, %d rejected", out_dir, len(results), len(rejected))
    return {
        "families": len(results),
        "rejected": len(rejected),
        "checkpoints": ",".join(checkpoints),
        "metrics_file": storage.join(out_dir, "metrics.json"),
    }
