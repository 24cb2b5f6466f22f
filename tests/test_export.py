"""Export in Navidrome's checkpoint format, rebuild the query model from the .pt alone, and the
model card (sources and licences from a real clips index, metrics with chance, intended use)."""

import io
import uuid

import numpy as np
import pyarrow as pa
import pytest
import torch

from musictext import schema, storage
from musictext.config import TextConfig, load_family_config
from musictext.embed.index import write_index
from musictext.export.card import normalise_sources, sources_from_index
from musictext.export.navidrome import CONFIG_KEYS, checkpoint_metrics, export_family, load_exported
from musictext.text_encoder import TextEmbedder

BLOCK = 16
TEXTS = ["a happy rock song with piano", "dark ambient drone", "Jazz trumpet, SAD mood"]
# The evaluation's metrics.json shape (musictext.evaluate.retrieval): fractions per direction.
METRICS = {
    "family": "muq",
    "split": "test",
    "n_test": 40,
    "text_to_audio": {"R@1": 0.32, "R@5": 0.55, "R@10": 0.725, "MRR": 0.41},
    "audio_to_text": {"R@1": 0.3, "R@5": 0.5, "R@10": 0.7, "MRR": 0.4},
    "chance": {"R@1": 0.025, "R@5": 0.125, "R@10": 0.25, "MRR": 0.1070},
    "blocks": {"mean": {"cosine": 0.81}, "robust": {"cosine": 0.52}, "dmean": {"cosine": None}},
}


def make_trained(root, base) -> tuple[TextEmbedder, object]:
    """A tiny TextEmbedder (tower moved off the base weights, as training would) saved as a
    training stage's out dir ``root/stage2`` (holding model/), and its demo muq config."""
    torch.manual_seed(3)
    model = TextEmbedder.from_base(TextConfig(base_model=base, hidden_dim=64), 3 * BLOCK)
    with torch.no_grad():
        for p in model.tower.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(root / "stage2" / "model")
    cfg = load_family_config("muq", "demo", {"audio": {"embed_dim": BLOCK}, "text": {"base_model": base}})
    return model.eval(), cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base_model):
    root = tmp_path_factory.mktemp("export")
    model, cfg = make_trained(root, tiny_base_model)
    return root, model, cfg


def write_clips_index(root) -> str:
    """A clips index over two real clip shards: 6 synthetic clips (CC0), 4 MagnaTagATune (NC)."""
    shards = []
    for k, (source, licence, n) in enumerate([("synthetic", "CC0-1.0 (generated)", 6),
                                              ("magnatagatune", "CC-BY-NC-SA-3.0", 4)]):
        rows = [{"clip_id": f"{source}-{i}#0", "track_id": f"{source}-{i}", "source": source,
                 "split": "test" if i == 0 else "train", "audio": [], "start_s": 0.0, "end_s": 30.0,
                 "captions": ["a calm piano piece"], "tags": [], "licence": licence} for i in range(n)]
        shard = str(root / f"clips{k}")
        storage.write_parquet(storage.join(shard, "clips.parquet"), pa.Table.from_pylist(rows, schema=schema.CLIP_SCHEMA))
        shards.append(shard)
    index = str(root / "index")
    write_index(shards, index)
    return index


@pytest.mark.parametrize("where", ["local", "memory"])
def test_export_round_trip(trained, where):
    root, model, cfg = trained
    out = str(root / "export") if where == "local" else f"memory://musictext-test/{uuid.uuid4().hex}/export"
    info = export_family(str(root / "stage2"), METRICS, out, cfg)  # a stage out dir holding model/
    assert info["checkpoint"].endswith("/muq_best_r1.pt")
    assert info["model_card"].endswith("/muq_MODEL_CARD.md")
    assert info["onnx"].endswith("/muq_text_embedder/model.onnx") and storage.exists(info["onnx"])
    assert storage.exists(storage.join(info["text_embedder"], "README.md"))

    ckpt = torch.load(io.BytesIO(storage.read_bytes(info["checkpoint"])), weights_only=True)
    assert set(ckpt) == {"config", "text_encoder_state_dict", "projection_state_dict", "metrics"}
    assert set(CONFIG_KEYS) <= set(ckpt["config"])
    assert ckpt["config"]["audio_encoder"] == "muq" and ckpt["config"]["family"] == "muq"
    assert ckpt["config"]["audio_dim"] == 3 * BLOCK == cfg.audio.target_dim
    assert ckpt["config"]["text_dim"] == 32 and ckpt["config"]["hidden_dim"] == 64
    # Navidrome's loader reads t2a_R@1 as a percentage; the fractions stay as evaluated.
    assert ckpt["metrics"]["t2a_R@1"] == pytest.approx(32.0)
    assert ckpt["metrics"]["text_to_audio"] == METRICS["text_to_audio"]
    assert not any(k.startswith("pooler") for k in ckpt["text_encoder_state_dict"])

    loaded = load_exported(info["checkpoint"])
    want = model.embed_texts(TEXTS)
    got = loaded.embed_texts(TEXTS)
    assert got.shape == (3, 3 * BLOCK)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(loaded.embed_text(TEXTS[0]), want[0], atol=1e-5)
    again = TextEmbedder.from_pretrained(info["text_embedder"])  # README.md and model.onnx beside it
    np.testing.assert_allclose(again.embed_texts(TEXTS), want, atol=1e-5)


def test_checkpoint_metrics_are_percentages_beside_the_fractions():
    got = checkpoint_metrics(METRICS)
    want = {"t2a_R@1": 32.0, "t2a_R@5": 55.0, "t2a_R@10": 72.5, "a2t_R@1": 30.0, "a2t_R@5": 50.0,
            "a2t_R@10": 70.0, "chance_R@1": 2.5, "chance_R@5": 12.5, "chance_R@10": 25.0}
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
    assert got["percent_keys"] == sorted(want)
    assert "t2a_MRR" not in got  # MRR is no recall: it stays a fraction, in text_to_audio
    for key in ("text_to_audio", "audio_to_text", "chance", "n_test", "blocks"):
        assert got[key] == METRICS[key]
    assert "t2a_R@1" not in checkpoint_metrics({"n_test": 3})  # nothing invented


def test_sources_from_a_real_clips_index(tmp_path):
    sources = sources_from_index(write_clips_index(tmp_path))
    assert set(sources) == {"synthetic", "magnatagatune"}
    assert sources["synthetic"]["licences"] == {"CC0-1.0 (generated)": 6}
    assert sources["magnatagatune"] == {"licences": {"CC-BY-NC-SA-3.0": 4}, "clips": 4,
                                        "hours": pytest.approx(4 * 30 / 3600, abs=1e-3),
                                        "splits": {"test": 1, "train": 3}}


def test_model_card(trained, tmp_path):
    root, _, cfg = trained
    info = export_family(str(root / "stage2"), METRICS, str(tmp_path / "out"), cfg,
                         clips_index=write_clips_index(tmp_path))
    card = (tmp_path / "out" / "muq_text_embedder" / "README.md").read_text()
    assert (tmp_path / "out" / "muq_MODEL_CARD.md").read_text() == card
    assert card.startswith(f'---\nbase_model: "{cfg.text.base_model}"\n')
    # family, space and what the vectors are
    assert "# musictext `muq` text embedder (muq)" in card
    assert "48-D unit vector in Navidrome's `muq` audio space" in card
    assert "collection `embedding`" in card and "upload path" in card
    assert f"audio model `{cfg.audio.model}` **(random-init demo stand-in)**" in card
    assert "not for real use" in card  # demo profile
    # sources and their licences, with clip counts
    assert "| synthetic | 6 | 0.05 | 5 / 0 / 1 | CC0-1.0 (generated) (6) |" in card
    assert "| magnatagatune | 4 | 0.03 | 3 / 0 / 1 | CC-BY-NC-SA-3.0 (4) |" in card
    assert "Trained on 8 training clips (of 10 clips, 0.08 h, from 2 source(s))" in card
    assert "Non-commercial / research-only data** (magnatagatune)" in card
    # metrics with chance, R@K in percent
    assert "| R@1 | 32.0 % | 30.0 % | 2.5 % |" in card
    assert "| MRR | 0.410 | 0.400 | 0.107 |" in card
    assert "40 held-out clips (test split)" in card
    assert "| dmean | – |" in card
    # use and serving
    assert "## Intended use" in card and "## Limitations" in card
    assert "musictext serve --models DIR" in card and '"model": "muq"' in card
    assert f"max |ONNX − PyTorch| = {info['onnx_max_abs_diff']:.1g}" in card


def test_model_card_with_given_sources_and_without(trained, tmp_path):
    root, _, cfg = trained
    export_family(str(root / "stage2"), METRICS, str(tmp_path / "a"), cfg,
                  sources={"musiccaps": "CC-BY-SA-4.0 (captions); audio: YouTube"})
    card = (tmp_path / "a" / "muq_MODEL_CARD.md").read_text()
    assert "| musiccaps | – | – | – | CC-BY-SA-4.0 (captions); audio: YouTube |" in card
    assert "Non-commercial" not in card
    export_family(str(root / "stage2"), {}, str(tmp_path / "b"), cfg)
    card = (tmp_path / "b" / "muq_MODEL_CARD.md").read_text()
    assert "data sources were not recorded" in card and "No evaluation metrics" in card


def test_normalise_sources_shapes_and_errors():
    assert normalise_sources(["fma", "jamendo"]) == {"fma": {"licences": {}}, "jamendo": {"licences": {}}}
    assert normalise_sources({"fma": "CC-BY-4.0"}) == {"fma": {"licences": {"CC-BY-4.0": None}}}
    with pytest.raises(TypeError, match=r"sources\['fma'\]"):
        normalise_sources({"fma": 3})
    with pytest.raises(TypeError, match="list of names or a dict"):
        normalise_sources("fma")


def test_export_refuses_a_different_space(trained, tmp_path):
    root, _, _ = trained
    other = load_family_config("music2latent", "demo")  # 3*48-D, not 48-D
    with pytest.raises(ValueError, match="wrong space"):
        export_family(str(root / "stage2" / "model"), {}, str(tmp_path), other)


def test_publish_dir_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    """A published model directory is replaced by a rename (locally) or overwrite-then-prune (a
    bucket): a copy that dies half-way leaves the old directory whole."""
    import shutil
    from pathlib import Path

    import fsspec

    from musictext.text_encoder import publish_dir

    old, new = tmp_path / "old", tmp_path / "new"
    for d, files in ((old, {"x": "1", "sub/y": "2"}), (new, {"x": "3"})):
        for name, text in files.items():
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text)
    target = tmp_path / "out" / "model"
    publish_dir(old, str(target))

    def dies_half_way(src, dst, **kw):
        Path(dst, "x").write_text("partial")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copytree", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        publish_dir(new, str(target))
    assert (target / "x").read_text() == "1" and (target / "sub" / "y").read_text() == "2"
    monkeypatch.undo()
    publish_dir(new, str(target))
    assert sorted(p.name for p in target.iterdir()) == ["x"] and (target / "x").read_text() == "3"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # nothing staged or retired left
    publish_dir(old, "memory://published/model")
    publish_dir(new, "memory://published/model")
    assert fsspec.filesystem("memory").find("/published/model") == ["/published/model/x"]
