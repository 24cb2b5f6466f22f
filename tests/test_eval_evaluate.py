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
                 family="muq", projections=("tsne",))
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk == m
    test = load_split(str(root / "text"), str(root / "targets"), "test")
    assert m["n_test"] == len(test) > 0
    assert {"family", "n_test", "text_to_audio", "audio_to_text", "chance", "blocks"} <= set(m)

    # Independent recomputation: every caption is a query, the gallery the clips (one per track
    # here); ties count against the true item.
    model = TextEmbedder.from_pretrained(str(root / "model"))
    captions = [c for caps in test.captions for c in caps]
    owner = np.array([i for i, caps in enumerate(test.captions) for _ in caps])
    assert m["n_captions"] == len(captions) == 2 * len(test)
    pred = model.embed_texts(captions)
    sim = cosine_matrix(pred, test.targets)  # [caption, clip]
    ranks_t2a = [1 + int((np.delete(sim[q], owner[q]) >= sim[q, owner[q]]).sum()) for q in range(len(captions))]
    ranks_a2t = [1 + int((sim[owner != j, j] >= sim[owner == j, j].max()).sum()) for j in range(len(test))]
    assert m["audio_to_text"]["MRR"] == pytest.approx(np.mean(1 / np.array(ranks_a2t)))
    assert m["text_to_audio"]["R@5"] == pytest.approx(np.mean(np.array(ranks_t2a) <= 5))
    assert m["text_to_audio"]["median_rank"] == pytest.approx(np.median(ranks_t2a))
    assert m["text_to_audio"]["R@5"] == pytest.approx(np.mean(positive_ranks(sim, owner) <= 5))
    assert m["chance"]["R@1"] == pytest.approx(1 / len(test))
    n = len(captions)  # audio->text: 2 relevant captions among n; P(none in the top 5) = C(n-5, 2) / C(n, 2)
    assert m["chance_audio_to_text"]["R@1"] == pytest.approx(2 / n)
    assert m["chance_audio_to_text"]["R@5"] == pytest.approx(1 - (n - 5) * (n - 6) / (n * (n - 1)))
    for uri in m["plots"].values():
        assert open(uri, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert {"rank_histogram", "similarity", "cosine_histogram", "projection_tsne"} <= set(m["plots"])

    # Per-block cosine between predicted and target sub-vectors (every caption with its clip).
    assert set(m["blocks"]) == {"mean", "robust", "dmean", "full"}
    for b, name in enumerate(("mean", "robust", "dmean")):
        p, t = pred[:, 8 * b : 8 * (b + 1)], test.targets[owner, 8 * b : 8 * (b + 1)]
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
