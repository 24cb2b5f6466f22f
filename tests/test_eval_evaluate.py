"""evaluate() on a toy split, per-block diagnostics by hand, and the run report."""

import base64
import json

import numpy as np
import pytest
import torch

from musictext.config import TextConfig
from musictext.evaluate.retrieval import block_diagnostics, evaluate
from musictext.metrics import cosine_matrix, positive_ranks
from musictext.report.html import format_table, write_report
from musictext.pairs import load_split
from musictext.text_encoder import TextEmbedder


@pytest.fixture(scope="module")
def setup(toy_dataset, tiny_base_model):
    root, _ = toy_dataset(n_clips=60, block_dim=8, captions_per_clip=2)
    base = tiny_base_model
    torch.manual_seed(0)
    TextEmbedder.from_base(TextConfig(base_model=base, hidden_dim=32), 24).save_pretrained(root / "model")
    return root


def test_block_diagnostics_by_hand():
    t = np.array([[3.0, 4.0, 0.0, 0.0, 1.0, 0.0]]) / np.sqrt(26)
    p = np.array([[3.0, 4.0, 1.0, 0.0, -1.0, 0.0]]) / np.sqrt(27)
    b = block_diagnostics(p, t)
    assert b["mean"]["cosine"] == pytest.approx(1.0)
    assert b["robust"]["cosine"] is None and b["robust"]["n_defined"] == 0  # all-zero target block
    assert b["robust"]["target_energy"] == 0.0 and b["robust"]["pred_energy"] == pytest.approx(1 / 27)
    assert b["dmean"]["cosine"] == pytest.approx(-1.0)
    assert b["full"]["cosine"] == pytest.approx(24 / np.sqrt(26 * 27))


def test_evaluate_and_report(setup, tmp_path):
    root = setup
    m = evaluate(str(root / "model"), str(root / "text"), str(root / "targets"), str(tmp_path / "eval"),
                 family="muq")
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk == m
    test = load_split(str(root / "text"), str(root / "targets"), "test")
    assert m["n_test"] == len(test) > 0
    assert {"family", "n_test", "text_to_audio", "audio_to_text", "chance", "blocks"} <= set(m)

    # Independent recomputation: queries are each clip's first caption, gallery the targets.
    model = TextEmbedder.from_pretrained(str(root / "model"))
    sim = cosine_matrix(model.embed_texts([c[0] for c in test.captions]), test.targets)
    ranks_a2t = [1 + int((np.delete(sim[:, j], j) >= sim[j, j]).sum()) for j in range(len(test))]
    assert m["audio_to_text"]["MRR"] == pytest.approx(np.mean(1 / np.array(ranks_a2t)))
    assert m["text_to_audio"]["R@5"] == pytest.approx(np.mean(positive_ranks(sim, np.arange(len(test))) <= 5))
    assert m["chance"]["R@1"] == pytest.approx(1 / len(test))
    for uri in m["plots"].values():
        assert open(uri, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    # Per-block cosine between predicted and target sub-vectors, recomputed by hand.
    pred = model.embed_texts([c[0] for c in test.captions])
    assert set(m["blocks"]) == {"mean", "robust", "dmean", "full"}
    for b, name in enumerate(("mean", "robust", "dmean")):
        p, t = pred[:, 8 * b : 8 * (b + 1)], test.targets[:, 8 * b : 8 * (b + 1)]
        cos = (p * t).sum(1) / (np.linalg.norm(p, axis=1) * np.linalg.norm(t, axis=1))
        assert m["blocks"][name]["cosine"] == pytest.approx(cos.mean(), abs=1e-5), name
    assert m["targets"] == {"target_dim": 24}  # what the targets' meta.json records

    rejected = [{"stage": "clip", "item": "track9", "reason": "decode <error>"}]
    other = dict(m, family="mert", blocks={"mean": m["blocks"]["mean"]},
                 train={"stage1": {"stage": 1, "epochs": 2, "best_epoch": 2, "best_valid_r1": 0.4, "seconds": 3.0}})
    m2l = dict(m, family="music2latent", targets={"kind": "music2latent", "model": "SonyCSLParis/music2latent",
                                                  "random_init": True, "target_dim": 24,
                                                  "clip_rendering": "stereo44k"})
    report = write_report([m, other, m2l], str(tmp_path / "report"), rejected)
    assert json.loads((tmp_path / "report" / "metrics.json").read_text()) == report
    assert report["rejected_count"] == 1
    fam = report["families"]["muq"]
    assert fam["R@1"] == m["text_to_audio"]["R@1"] and fam["n_test"] == m["n_test"]
    assert fam["chance"] == m["chance"] and fam["audio_to_text"] == m["audio_to_text"]
    assert fam["block_cosine"] == {k: v["cosine"] for k, v in m["blocks"].items()}
    # Every block is reported for every family, n/a where the evaluation has none.
    assert report["families"]["mert"]["block_cosine"] == {
        "mean": m["blocks"]["mean"]["cosine"], "robust": None, "dmean": None, "full": None}
    assert report["families"]["music2latent"]["targets"]["clip_rendering"] == "stereo44k"
    page = (tmp_path / "report" / "report.html").read_text()
    png = base64.b64encode(open(m["plots"]["rank_histogram"], "rb").read()).decode()
    assert png in page and "decode &lt;error&gt;" in page and "best valid R@1" in page
    assert page.count("<th>block</th>") == 3 and page.count("<td>dmean</td>") == 3
    assert "Navidrome itself stores no Music2Latent vector for mono or multi-channel" in page
    assert page.count("stores no Music2Latent vector") == 1  # only in the music2latent section
    assert "44.1 kHz stereo rendering of each clip" in page and "random-init stand-in" in page
    table = format_table(report)
    assert "muq" in table and "mert" in table and f"({m['chance']['R@1']:.3f})" in table
    assert "robust" in table and "dmean" in table and f"{m['blocks']['robust']['cosine']:.3f}" in table
    assert "music2latent targets: a 44.1 kHz stereo file of each clip" in table
    assert "rejected items: 1" in table
