"""The ONNX export of the text encoder equals PyTorch under onnxruntime, and OnnxTextEmbedder
(tokenisation in Python, no torch) equals TextEmbedder.embed_texts."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from musictext import layout, text_encoder
from musictext.export import onnx_embedder, onnx_export
from musictext.export.navidrome import export_family
from musictext.export.onnx_embedder import OnnxTextEmbedder
from tests.test_export import BLOCK, METRICS, make_trained

TOL = 1e-4
# Varied lengths (one word to past max_length), markup and entities that cleaning removes,
# case, non-ASCII, an empty query: every batch below mixes them, so rows are padded.
TEXTS = [
    "piano",
    "A slow, SAD piano ballad with soft strings and a little rain",
    "<b>heavy</b> metal &amp; double kick drums",
    "",
    "lo-fi hip hop beat to study to " * 20,
    "Trompete und Kontrabass — café jazz, späte Nacht",
    "drums",
    "an upbeat electronic dance track at 128 bpm with a female vocal",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_base_model):
    root = tmp_path_factory.mktemp("onnx")
    model, cfg = make_trained(root, tiny_base_model)
    info = export_family(str(root / "stage2"), METRICS, str(root / "out"), cfg)
    return model, info


def torch_and_onnx(model, session, texts):
    enc = model.tokenize(texts)
    with torch.no_grad():
        want = model(enc["input_ids"], enc["attention_mask"]).numpy()
    feeds = {k: enc[k].numpy() for k in onnx_embedder.INPUT_NAMES}
    return want, session.run(None, feeds)[0], enc["attention_mask"]


def test_export_summary(exported):
    _, info = exported
    assert info["onnx_max_abs_diff"] <= TOL
    assert info["onnx_bytes"] > 1e6  # the tiny tower's 30522 x 32 word embeddings alone are 3.9 MB
    assert 0 < info["onnx_seconds"] < info["export_seconds"]


def test_graph_has_dynamic_batch_and_sequence(exported):
    _, info = exported
    graph = onnx.load(info["onnx"])
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inputs = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert inputs == {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    (out,) = graph.graph.output
    assert out.name == "embedding"
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim][0] == "batch"


@pytest.mark.parametrize("batch", [1, 2, 3, 8])
def test_onnx_equals_pytorch(exported, batch):
    model, info = exported
    session = ort.InferenceSession(info["onnx"], providers=["CPUExecutionProvider"])
    for start in range(0, len(TEXTS), batch):
        texts = TEXTS[start : start + batch]
        want, got, mask = torch_and_onnx(model, session, texts)
        assert got.shape == (len(texts), 3 * BLOCK)
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    if batch == 8:  # the batch really was padded and truncated at max_length
        assert (mask == 0).any() and mask.shape[1] == model.max_length


def test_padding_does_not_change_a_row(exported):
    model, info = exported
    session = ort.InferenceSession(info["onnx"], providers=["CPUExecutionProvider"])
    _, alone, _ = torch_and_onnx(model, session, ["piano"])
    _, padded, mask = torch_and_onnx(model, session, ["piano", TEXTS[1]])
    assert mask[0].sum() < mask.shape[1]
    np.testing.assert_allclose(padded[0], alone[0], atol=TOL, rtol=0)


def test_onnx_embedder_equals_text_embedder(exported):
    model, info = exported
    emb = OnnxTextEmbedder(info["text_embedder"])
    want = model.embed_texts(TEXTS)
    np.testing.assert_allclose(emb.embed_texts(TEXTS), want, atol=TOL, rtol=0)
    np.testing.assert_allclose(emb.embed_texts(TEXTS, batch_size=3), want, atol=TOL, rtol=0)
    np.testing.assert_allclose(emb.embed_text(TEXTS[2]), want[2], atol=TOL, rtol=0)
    assert emb.embed_texts([]).shape == (0, 3 * BLOCK)
    assert emb.embed_texts(TEXTS).dtype == np.float32


def test_onnx_embedder_runs_without_torch(exported, tmp_path):
    model, info = exported
    np.save(tmp_path / "want.npy", model.embed_texts(TEXTS))
    (tmp_path / "texts.json").write_text(json.dumps(TEXTS))
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np
        from musictext.export.onnx_embedder import OnnxTextEmbedder
        got = OnnxTextEmbedder({info["text_embedder"]!r}).embed_texts(json.load(open({str(tmp_path / "texts.json")!r})))
        diff = np.abs(got - np.load({str(tmp_path / "want.npy")!r})).max()
        print("maxdiff", diff)
        sys.exit(0 if diff <= {TOL} else 1)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "maxdiff" in done.stdout


def test_onnx_embedder_refuses_bad_directories(exported, tmp_path):
    _, info = exported
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        OnnxTextEmbedder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format 'something-else'"):
        OnnxTextEmbedder(tmp_path)
    with pytest.raises(ValueError, match="local directory"):
        OnnxTextEmbedder("gs://bucket/muq_text_embedder")
    with pytest.raises(TypeError, match="list of strings"):
        OnnxTextEmbedder(info["text_embedder"]).embed_texts("piano")


def test_constants_agree_with_the_torch_side():
    # onnx_embedder repeats two constants so that it needs no torch import.
    assert onnx_embedder.CONFIG_FILE == layout.CONFIG_FILE
    assert onnx_embedder.FORMAT == text_encoder.MODEL_TYPE


def test_a_wrong_graph_is_refused(exported, tmp_path, monkeypatch):
    """Fault injection: the graph written is another model's; the check must catch it, and the
    export then leaves nothing behind."""
    model, info = exported
    other, cfg = make_trained(tmp_path, model.base_model)
    with torch.no_grad():
        other.head.blocks[0].bias.add_(1.0)
    real_export = onnx_export.export_onnx
    monkeypatch.setattr(onnx_export, "export_onnx", lambda _model, path: real_export(other, path))
    with pytest.raises(RuntimeError, match="differs from PyTorch by .* not exporting it"):
        onnx_export.export_checked_onnx(model, tmp_path)
    stage_dir = str(Path(info["checkpoint"]).parents[1] / "stage2")
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_family(stage_dir, METRICS, str(tmp_path / "out"), cfg)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
