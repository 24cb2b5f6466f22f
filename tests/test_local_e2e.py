"""A tiny whole-pipeline run through kfp.local, exactly as `musictext run --local` does it."""

from __future__ import annotations

import json
import os

import pytest

from musictext_kfp.cli import main as cli_main
from musictext.config import FAMILIES, load_family_config

TINY = [
    "--corpus-size", "40", "--shard-size", "20", "--clip-seconds", "4",
    "--epochs-stage1", "1", "--epochs-stage2", "1", "--batch-size", "8",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:  # the run sets OMP_NUM_THREADS etc. for its tasks
        for name in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE", "MUSICTEXT_IMAGE", "MUSICTEXT_AUDIO_IMAGE"):
            mp.setenv(name, os.environ[name]) if name in os.environ else mp.delenv(name, raising=False)
        assert cli_main(["run", "--local", "--runs-dir", str(runs), "--run-id", "tiny", *TINY]) == 0
    return runs


def test_run_layout(tiny_run):
    run = tiny_run / "tiny"
    assert (tiny_run / "latest").resolve() == run.resolve()
    for name in ("metrics.json", "report.html", "rejected.json", "params.json"):
        assert (run / name).is_file(), name
    assert (run / "pipeline").is_dir()  # every task's artifacts, as kfp.local left them
    params = json.loads((run / "params.json").read_text())
    assert params["corpus_size"] == 40 and params["profile"] == "demo"  # override, default


def test_metrics_fields(tiny_run):
    metrics = json.loads((tiny_run / "tiny" / "metrics.json").read_text())
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

    ckpts = tiny_run / "tiny" / "checkpoints"
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
