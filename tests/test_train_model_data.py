"""TextEmbedder structure and persistence (the training stream is tested in test_train_stream)."""

import os

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from musictext.config import TextConfig
from musictext.text_encoder import TextEmbedder
from tests.toy import write_tiny_base_model, write_toy_dataset


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = tmp_path_factory.mktemp("model")
    path = write_tiny_base_model(root / "base", layers=3)
    write_toy_dataset(str(root / "text"), str(root / "targets"), AutoTokenizer.from_pretrained(path),
                      n_clips=40, block_dim=4, captions_per_clip=3)
    return root, path


def test_forward_shape_norm_freeze_and_reload(base, tmp_path):
    root, path = base
    torch.manual_seed(0)
    model = TextEmbedder.from_base(TextConfig(base_model=path, hidden_dim=16), 3 * 4)
    assert len(model.head.blocks) == 3 and model.head.block_dim == 4
    enc = model.tokenize(["one", "two words here"])
    out = model(enc["input_ids"], enc["attention_mask"])
    assert out.shape == (2, 12)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    # padding must not change a text's vector (mean pooling respects the mask)
    single = model.embed_text("one")
    np.testing.assert_allclose(single, model.embed_texts(["one", "a much longer caption here"])[0], atol=1e-5)

    model.freeze(2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("tower.embeddings.") for n in frozen)
    assert any(".layer.1." in n for n in frozen) and not any(".layer.2." in n for n in frozen)
    assert not any(n.startswith("head.") for n in frozen)

    model.save_pretrained(tmp_path / "m")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(tmp_path / "m"))
    again = TextEmbedder.from_pretrained(tmp_path / "m")
    np.testing.assert_allclose(again.embed_texts(["one", "two"]), model.embed_texts(["one", "two"]), atol=1e-6)


def test_bucket_round_trip_sees_rewrites(base):
    """A bucket model dir rewritten in place (every better epoch) must load fresh each time."""
    import uuid

    from musictext.train.run import save_model

    _, path = base
    uri = f"memory://musictext-test/{uuid.uuid4().hex}/stage"
    vecs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = TextEmbedder.from_base(TextConfig(base_model=path, hidden_dim=16), 12)
        save_model(model, uri)
        loaded = TextEmbedder.from_pretrained(f"{uri}/model")
        np.testing.assert_allclose(loaded.embed_texts(["x y"]), model.embed_texts(["x y"]), atol=1e-6)
        vecs.append(loaded.embed_texts(["x y"]))
    assert not np.allclose(vecs[0], vecs[1])
