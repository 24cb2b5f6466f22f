"""Query an exported text embedder through onnxruntime, without torch.

``{name}_text_embedder/`` holds ``model.onnx`` (written by ``onnx_export``), the tokenizer files
and ``config.json``; queries get the cleaning and tokenizer settings of
``TextEmbedder.tokenize`` (same ``clean_caption``, ``max_length``, truncation, padding), so the
vectors equal ``TextEmbedder.embed_texts`` within float noise. Nothing here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

from musictext.captions import clean_caption

ONNX_FILE = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
CONFIG_FILE = "config.json"  # = layout.CONFIG_FILE; not imported, to keep this module light
FORMAT = "musictext-text-embedder"  # = text_encoder.MODEL_TYPE, which would import torch


class OnnxTextEmbedder:
    """Text -> unit vector in the export's audio space, via ``model.onnx`` (local directory)."""

    def __init__(self, directory: str | Path, providers: list[str] | None = None):
        if "://" in str(directory):
            raise ValueError(f"{directory}: OnnxTextEmbedder reads a local directory; copy the export first")
        directory = Path(directory)
        cfg = self._read_config(directory)
        onnx_path = directory / ONNX_FILE
        if not onnx_path.is_file():
            raise FileNotFoundError(f"{directory} has no {ONNX_FILE} (exported before ONNX was added?)")
        self.directory = directory
        self.target_dim = int(cfg["target_dim"])
        self.max_length = int(cfg["max_length"])
        self.lowercase = bool(cfg["lowercase"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.session = ort.InferenceSession(str(onnx_path), providers=providers or ["CPUExecutionProvider"])

    @staticmethod
    def _read_config(directory: Path) -> dict:
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}: not an exported text embedder")
        cfg = json.loads(path.read_text())
        if cfg.get("format") != FORMAT:
            raise ValueError(f"{path}: format {cfg.get('format')!r}, expected {FORMAT!r}")
        return cfg

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        cleaned = [clean_caption(t, self.lowercase) for t in texts]
        enc = self.tokenizer(cleaned, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return {name: enc[name].astype(np.int64) for name in INPUT_NAMES}

    def embed_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """[N, target_dim] float32, L2-normalised (the graph ends with the global L2 norm)."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of strings; use embed_text for one")
        chunks = [
            self.session.run([OUTPUT_NAME], self.tokenize(list(texts[start : start + batch_size])))[0]
            for start in range(0, len(texts), batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.target_dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)

    def embed_text(self, text: str) -> np.ndarray:
        return self.embed_texts([text])[0]
