"""Export in Navidrome's checkpoint format and rebuild the query model from the .pt alone."""

import uuid

import numpy as np
import pytest
import torch

from musictext.config import TextConfig, load_family_config
from musictext.export.navidrome import CONFIG_KEYS, export_family, load_exported
from musictext.text_encoder import TextEmbedder

BLOCK = 16
TEXTS = ["a happy rock song with piano", "dark ambient drone", "Jazz trumpet, SAD mood"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base_model):
    root = tmp_path_factory.mktemp("export")
    base = tiny_base_model
    torch.manual_seed(3)
    model = TextEmbedder.from_base(TextConfig(base_model=base, hidden_dim=64), 3 * BLOCK)
    with torch.no_grad():  # make the tower differ from the base weights, as training would
        for p in model.tower.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(root / "stage2" / "model")
    cfg = load_family_config("muq", "demo", {"audio": {"embed_dim": BLOCK}, "text": {"base_model": base}})
    return root, model.eval(), cfg


@pytest.mark.parametrize("where", ["local", "memory"])
def test_export_round_trip(trained, where):
    root, model, cfg = trained
    out = str(root / "export") if where == "local" else f"memory://musictext-test/{uuid.uuid4().hex}/export"
    metrics = {"R@1": 0.25, "n_test": 40}
    info = export_family(str(root / "stage2"), metrics, out, cfg)  # a stage out dir holding model/
    assert info["checkpoint"].endswith("/muq_best_r1.pt")

    from musictext import storage

    ckpt = torch.load(__import__("io").BytesIO(storage.read_bytes(info["checkpoint"])), weights_only=True)
    assert set(ckpt) == {"config", "text_encoder_state_dict", "projection_state_dict", "metrics"}
    assert set(CONFIG_KEYS) <= set(ckpt["config"])
    assert ckpt["config"]["audio_dim"] == 3 * BLOCK == cfg.audio.target_dim
    assert ckpt["config"]["text_dim"] == 32 and ckpt["config"]["hidden_dim"] == 64
    assert ckpt["metrics"] == metrics
    assert not any(k.startswith("pooler") for k in ckpt["text_encoder_state_dict"])

    loaded = load_exported(info["checkpoint"])
    want = model.embed_texts(TEXTS)
    got = loaded.embed_texts(TEXTS)
    assert got.shape == (3, 3 * BLOCK)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(loaded.embed_text(TEXTS[0]), want[0], atol=1e-5)
    again = TextEmbedder.from_pretrained(info["text_embedder"])
    np.testing.assert_allclose(again.embed_texts(TEXTS), want, atol=1e-5)


def test_export_refuses_a_different_space(trained, tmp_path):
    root, _, _ = trained
    other = load_family_config("music2latent", "demo")  # 3*48-D, not 48-D
    with pytest.raises(ValueError, match="wrong space"):
        export_family(str(root / "stage2" / "model"), {}, str(tmp_path), other)
