"""The run's deliverables gather every stage's rejections and every family's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from musictext import schema, storage
from musictext.rejects import Rejections
from musictext.report.assemble import assemble_run
from musictext.embed.index import write_index


def family_metrics(family: str, r10: float) -> dict:
    chance = {"R@1": 0.1, "R@5": 0.5, "R@10": 1.0, "MRR": 0.29}
    scores = {"R@1": 0.3, "R@5": 0.8, "R@10": r10, "MRR": 0.5}
    return {"family": family, "n_test": 10, "text_to_audio": scores, "audio_to_text": scores,
            "chance": chance, "blocks": {}}


def test_assemble_run(tmp_path: Path):
    # A clip shard whose clip stage rejected one track, and a family stage that rejected a clip.
    shard = tmp_path / "clips0"
    storage.write_parquet(str(shard / "clips.parquet"), pa.Table.from_pylist([
        {"clip_id": "synthetic-000001#0", "track_id": "synthetic-000001", "source": "synthetic", "split": "test",
         "audio": [], "start_s": 0.0, "end_s": 6.0, "captions": ["a calm piano piece"], "tags": [], "licence": "x"},
    ], schema=schema.CLIP_SCHEMA))
    clip_rejects = Rejections("clip")
    clip_rejects.add("synthetic-000007", "undecodable audio")
    clip_rejects.write(str(shard))
    # The listing rejected a row and a download failed: both reach the run too.
    listing, raw = tmp_path / "listing", tmp_path / "raw0"
    list_rejects, download_rejects = Rejections("list"), Rejections("download")
    list_rejects.add("musiccaps-public.csv:12", "end_s 40 is not after start_s 40")
    download_rejects.add("musiccaps-BvQ3aBqdQvA", "yt-dlp: Video unavailable")
    list_rejects.write(str(listing))
    download_rejects.write(str(raw))
    write_index([str(shard)], str(tmp_path / "index"), upstream_dirs=[str(listing), str(raw)])
    targets = tmp_path / "targets_muq"
    embed_rejects = Rejections("embed_audio")
    embed_rejects.add("synthetic-000003#0", "all-silent audio")
    embed_rejects.write(str(targets))

    evals, exports = [], []
    for family, name in (("muq", "muq"), ("mert", "mert")):
        ev = tmp_path / f"eval_{family}"
        storage.write_json(str(ev / "metrics.json"), family_metrics(family, 0.9))
        evals.append(str(ev))
        ex = tmp_path / f"export_{family}"
        (ex / f"{name}_text_embedder").mkdir(parents=True)
        (ex / f"{name}_text_embedder" / "config.json").write_text(json.dumps({"family": family}))
        (ex / f"{name}_best_r1.pt").write_bytes(family.encode())
        exports.append(str(ex))

    out = tmp_path / "run"
    summary = assemble_run(evals, exports, [str(targets)], str(tmp_path / "index"), str(out),
                           html_path=str(tmp_path / "html" / "report.html"))

    rejected = json.loads((out / "rejected.json").read_text())
    assert {(r["stage"], r["item"]) for r in rejected} == {
        ("clip", "synthetic-000007"), ("embed_audio", "synthetic-000003#0"), ("list", "musiccaps-public.csv:12"),
        ("download", "musiccaps-BvQ3aBqdQvA")}
    assert summary["rejected"] == 4 and summary["families"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["families"]) == {"muq", "mert"}
    assert metrics["families"]["mert"]["R@10"] == 0.9
    assert metrics["families"]["mert"]["chance"]["R@10"] == 1.0
    ckpts = out / "checkpoints"
    assert (ckpts / "muq_best_r1.pt").read_bytes() == b"muq"
    assert json.loads((ckpts / "mert_text_embedder" / "config.json").read_text()) == {"family": "mert"}
    html = (tmp_path / "html" / "report.html").read_text()
    assert "synthetic-000007" in html and "all-silent audio" in html and "Video unavailable" in html
    # The Data table: clips per source with hours and splits, rejections counted per source.
    assert "<h2>Data</h2>" in html and "<td>synthetic</td><td>1</td><td>0.00</td><td>0 / 0 / 1</td>" in html
    corpus = (tmp_path / "index" / "corpus.md").read_text()
    assert "| synthetic | 1 |" in corpus and "| musiccaps | 0 |" in corpus


def test_a_clip_refused_alike_by_each_family_is_one_row(tmp_path: Path):
    shard = tmp_path / "clips0"
    storage.write_parquet(str(shard / "clips.parquet"), pa.Table.from_pylist([], schema=schema.CLIP_SCHEMA))
    write_index([str(shard)], str(tmp_path / "index"))
    stage_dirs = []
    for family, reason in (("muq", "undecodable audio x.wav"), ("mert", "undecodable audio x.wav"),
                           ("music2latent", "mono file")):
        rejects = Rejections("embed_audio")
        rejects.add("bad#0", reason)
        rejects.write(str(tmp_path / family))
        stage_dirs.append(str(tmp_path / family))
    summary = assemble_run([], [], stage_dirs, str(tmp_path / "index"), str(tmp_path / "run"))
    rejected = json.loads((tmp_path / "run" / "rejected.json").read_text())
    assert [r["reason"] for r in rejected] == ["undecodable audio x.wav", "mono file"] and summary["rejected"] == 2
