"""ONNX export of a TextEmbedder's whole query graph: tower, pooling, head and the global L2 norm.

The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence axes)
and returns ``embedding`` [batch, target_dim]; tokenisation stays in Python
(``onnx_embedder.OnnxTextEmbedder``, with the tokenizer files saved beside ``model.onnx``).
Every export is checked under onnxruntime against PyTorch on sentences of varied length, batched
and one by one, and refused when they differ by more than ``ONNX_TOLERANCE``.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from musictext.export.onnx_embedder import INPUT_NAMES, ONNX_FILE, OUTPUT_NAME
from musictext.text_encoder import TextEmbedder

log = logging.getLogger(__name__)

OPSET = 17  # LayerNormalization is a single op from 17 on
ONNX_TOLERANCE = 1e-4
# Lengths from 1 word to past any max_length (truncation), odd characters, an empty query.
CHECK_SENTENCES = (
    "piano",
    "a slow sad piano ballad with soft strings",
    "Upbeat ELECTRONIC dance track, heavy bass & 128 bpm; vocals: female, English.",
    "",
    "lo-fi hip hop beat to study to " * 12,
    "Trompete und Kontrabass, café jazz — späte Nacht",
)


def _trace_example(model: TextEmbedder) -> tuple[torch.Tensor, torch.Tensor]:
    # Two lengths, so the traced graph keeps the padding mask (an all-ones mask may be skipped).
    enc = model.tokenize(["a short one", "a longer example sentence with several more words in it"])
    return enc["input_ids"], enc["attention_mask"]


def export_onnx(model: TextEmbedder, path: str | Path) -> None:
    """Write ``model``'s query graph to ``path`` (a local file)."""
    model = model.eval()
    dynamic = {"batch": 0, "sequence": 1}
    axes = {name: {i: axis for axis, i in dynamic.items()} for name in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch"}
    with warnings.catch_warnings():
        # Expected and harmless here: the legacy (TorchScript) exporter is the one that needs no
        # onnxscript, and its tracer warnings are covered by the numerical check that follows.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            model,
            _trace_example(model),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))  # the path form also checks models over 2 GB


def onnx_max_abs_diff(model: TextEmbedder, path: str | Path, texts=CHECK_SENTENCES) -> float:
    """Largest |onnxruntime - PyTorch| over ``texts`` as one padded batch and one at a time."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in [list(texts), *([t] for t in texts)]:
        enc = model.tokenize(batch)
        with torch.no_grad():
            want = model(enc["input_ids"], enc["attention_mask"]).float().numpy()
        feeds = {name: enc[name].numpy().astype(np.int64) for name in INPUT_NAMES}
        (got,) = session.run([OUTPUT_NAME], feeds)
        if got.shape != want.shape:
            raise RuntimeError(f"{path}: ONNX output {got.shape} != PyTorch {want.shape} for {batch!r}")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def export_checked_onnx(model: TextEmbedder, directory: str | Path) -> dict:
    """``directory/model.onnx``, verified against PyTorch; {file, bytes, seconds, max_abs_diff}.

    RuntimeError when onnxruntime and PyTorch differ by more than ``ONNX_TOLERANCE``.
    """
    path = Path(directory) / ONNX_FILE
    model = model.to("cpu").eval()
    t0 = time.perf_counter()
    export_onnx(model, path)
    seconds = time.perf_counter() - t0
    diff = onnx_max_abs_diff(model, path)
    if not diff <= ONNX_TOLERANCE:  # also refuses NaN
        raise RuntimeError(
            f"{path}: the ONNX export differs from PyTorch by {diff:.3g} (> {ONNX_TOLERANCE}); not exporting it"
        )
    size = path.stat().st_size
    log.info("ONNX export: %.1f MB in %.1fs, max |onnx - torch| %.2g", size / 1e6, seconds, diff)
    return {"file": ONNX_FILE, "bytes": size, "seconds": seconds, "max_abs_diff": diff, "opset": OPSET}
