"""Assemble one run's deliverables from the per-family task outputs (the pipeline's last step)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from musictext import storage
from musictext.rejects import read_rejections
from musictext.report.html import write_report
from musictext.layout import CHECKPOINTS, METRICS_FILE, REJECTED_JSON, REPORT_HTML, index_rejections, read_index

log = logging.getLogger(__name__)


def link_or_copy(src: Path, dst: Path) -> None:
    """A file or folder at ``dst``; hard links keep big checkpoints from being stored twice."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_file, dirs_exist_ok=True)
    else:
        _link_file(src, dst)


def _link_file(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem (or a pod's download dir): copy instead
        shutil.copy2(src, dst)


def collect_checkpoints(export_dirs: list[str], out_dir: str) -> list[str]:
    """Every exported family (``{name}_best_r1.pt`` and its HF folder) into checkpoints/."""
    dest = Path(out_dir) / CHECKPOINTS
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for export_dir in export_dirs:
        for item in sorted(Path(export_dir).iterdir()):
            link_or_copy(item, dest / item.name)
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
    results = [storage.read_json(storage.join(d, METRICS_FILE)) for d in evaluation_dirs]
    rejected = index_rejections(clips_index_dir)
    for stage_dir in stage_dirs:
        rejected.extend(read_rejections(stage_dir))
    # Per-family stages (embedding, text) refuse a bad clip once per family, alike: one row each.
    unique: dict[tuple, dict] = {}
    for row in rejected:
        unique.setdefault((row["stage"], row["item"], row["reason"]), row)
    rejected = list(unique.values())
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    checkpoints = collect_checkpoints(export_dirs, out_dir)
    storage.write_json(storage.join(out_dir, REJECTED_JSON), rejected)
    write_report(results, out_dir, rejected=rejected, corpus=read_index(clips_index_dir).get("corpus"))
    if html_path:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(out_dir) / REPORT_HTML, html_path)
    log.info("run assembled in %s: %d families, %d rejected", out_dir, len(results), len(rejected))
    return {
        "families": len(results),
        "rejected": len(rejected),
        "checkpoints": ",".join(checkpoints),
        "metrics_file": storage.join(out_dir, METRICS_FILE),
    }
