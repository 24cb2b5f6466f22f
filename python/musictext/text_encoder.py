"""TextEmbedder: a pretrained text tower plus a head that predicts the whole enriched audio vector.

The audio target is ``[mean | robust | dmean]`` (three blocks of ``block_dim``) with ONE global L2
normalisation. The head therefore has a shared trunk and one output layer per block; the blocks
are concatenated and normalised globally, exactly like the target, so the model learns the
relative size of the blocks too (e.g. MuQ clips ≤120 s have all-zero robust/dmean blocks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from musictext import storage
from musictext.captions import clean_caption
from musictext.layout import CONFIG_FILE, WEIGHTS_FILE
from musictext.hub import is_remote, resolve_pretrained

log = logging.getLogger(__name__)

N_BLOCKS = 3
BLOCK_NAMES = ("mean", "robust", "dmean")
MODEL_TYPE = "musictext-text-embedder"


class ProjectionHead(nn.Module):
    """Shared MLP trunk, then one linear output per enrichment block."""

    def __init__(self, text_dim: int, hidden_dim: int, target_dim: int):
        super().__init__()
        if target_dim % N_BLOCKS:
            raise ValueError(f"target_dim {target_dim} is not {N_BLOCKS} blocks")
        self.block_dim = target_dim // N_BLOCKS
        self.trunk = nn.Sequential(
            nn.Linear(text_dim, hidden_dim), nn.GELU(), nn.LayerNorm(hidden_dim)
        )
        self.blocks = nn.ModuleList(
            nn.Linear(hidden_dim, self.block_dim) for _ in range(N_BLOCKS)
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        h = self.trunk(pooled)
        return torch.cat([block(h) for block in self.blocks], dim=-1)


def transformer_layers(tower: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of common encoder families (BERT, DistilBERT, GPT-2...)."""
    for path in ("encoder.layer", "transformer.layer", "h", "layers", "encoder.layers"):
        obj = tower
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the transformer layers of {type(tower).__name__}")


def drop_pooler(tower: nn.Module) -> nn.Module:
    # BERT's pooler is unused with mean pooling; left in place it would be an unused trainable
    # parameter (DDP errors) and dead weight in the export.
    if getattr(tower, "pooler", None) is not None:
        tower.pooler = None
    return tower


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


@contextlib.contextmanager
def local_copy(location: str):
    """A local directory with the contents of ``location`` (a path, or a fresh bucket download).

    Not hub.mirror_remote: its cache is keyed by URI and never refreshed, while a training
    out dir is rewritten in place at every better epoch.
    """
    if not is_remote(location):
        yield storage.local_path(location)
        return
    fs, path = storage.fs_for(location)
    if not fs.isdir(path):
        raise FileNotFoundError(f"model directory {location} does not exist")
    with tempfile.TemporaryDirectory(prefix="textembedder-") as tmp:
        fs.get(path.rstrip("/") + "/", tmp, recursive=True)
        yield tmp


def publish_dir(local: Path, uri: str) -> None:
    """Copy a finished local directory to ``uri`` (local path or bucket), replacing it."""
    fs, path = storage.fs_for(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    if not is_remote(uri):
        shutil.copytree(local, path)
        return
    fs.put(str(local).rstrip("/") + "/", path, recursive=True)


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict as contiguous CPU tensors (what safetensors and torch.save get)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def tower_from_config(tower_config: dict) -> nn.Module:
    cfg = dict(tower_config)
    return drop_pooler(AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)))


class TextEmbedder(nn.Module):
    """Text → unit vector in an audio family's enriched embedding space."""

    def __init__(
        self,
        tower: nn.Module,
        tokenizer,
        target_dim: int,
        hidden_dim: int,
        base_model: str,
        pooling: str = "mean",
        max_length: int = 64,
        lowercase: bool = True,
    ):
        super().__init__()
        self.tower = tower
        self.tokenizer = tokenizer
        self.text_dim = int(tower.config.hidden_size)
        self.head = ProjectionHead(self.text_dim, hidden_dim, target_dim)
        self.target_dim = int(target_dim)
        self.hidden_dim = int(hidden_dim)
        self.base_model = base_model
        self.pooling = pooling
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_base(cls, text_cfg, target_dim: int) -> "TextEmbedder":
        """Fresh head on the pretrained tower named by a TextConfig."""
        path = resolve_pretrained(text_cfg.base_model)
        tower = drop_pooler(AutoModel.from_pretrained(path))
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(
            tower,
            tokenizer,
            target_dim=target_dim,
            hidden_dim=text_cfg.hidden_dim,
            base_model=text_cfg.base_model,
            pooling=text_cfg.pooling,
            max_length=text_cfg.max_length,
            lowercase=text_cfg.lowercase,
        )

    def freeze(self, n_layers: int) -> None:
        """Freeze the embeddings and the first ``n_layers`` transformer layers (none if 0)."""
        if n_layers <= 0:
            return
        layers = transformer_layers(self.tower)
        embeddings = self.tower.get_input_embeddings()
        for module in [getattr(self.tower, "embeddings", embeddings), *layers[:n_layers]]:
            for p in module.parameters():
                p.requires_grad_(False)
        log.info("froze embeddings + %d/%d layers", min(n_layers, len(layers)), len(layers))

    # -- compute ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, target_dim], globally L2-normalised like the audio targets."""
        out = self.tower(input_ids=input_ids, attention_mask=attention_mask)
        pooled = pool(out.last_hidden_state, attention_mask, self.pooling)
        return F.normalize(self.head(pooled), dim=-1)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # Queries get the same cleaning as the training captions (prepare_text).

        texts = [clean_caption(t, self.lowercase) for t in texts]
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        # Only the modules in train mode are switched (and switched back): eval() + train() walk
        # and set all ~130 modules, ~0.8 ms per call, ~8% of a single MiniLM query on a CPU.
        training = [m for m in self.modules() if m.training]
        for m in training:
            m.training = False
        device = next(self.parameters()).device
        chunks = []
        try:
            for start in range(0, len(texts), batch_size):
                enc = self.tokenize(list(texts[start : start + batch_size]))
                vec = self(enc["input_ids"].to(device), enc["attention_mask"].to(device))
                chunks.append(vec.float().cpu().numpy())
        finally:
            for m in training:
                m.training = True
        if not chunks:
            return np.zeros((0, self.target_dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)

    def embed_text(self, text: str) -> np.ndarray:
        return self.embed_texts([text])[0]

    # -- persistence --------------------------------------------------------------------------
    def describe(self) -> dict:
        return {
            # Not "model_type": transformers would read that key when loading the tokenizer
            # from this directory and warn about an unknown architecture.
            "format": MODEL_TYPE,
            "base_model": self.base_model,
            "target_dim": self.target_dim,
            "block_dim": self.head.block_dim,
            "hidden_dim": self.hidden_dim,
            "text_dim": self.text_dim,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "lowercase": self.lowercase,
            "tower_config": self.tower.config.to_dict(),
        }

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json + model.safetensors + tokenizer files (a local directory)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.describe(), indent=2, default=str))
        save_file(cpu_state(self), str(directory / WEIGHTS_FILE))
        self.tokenizer.save_pretrained(str(directory))

    def save_to(self, location: str) -> None:
        """save_pretrained to a local path or bucket URI, replacing whatever is there."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            self.save_pretrained(local)
            publish_dir(local, location)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "TextEmbedder":
        """Load a save_pretrained directory (local path or bucket URI); no base model needed."""
        with local_copy(str(directory)) as local:
            return cls._load_local(Path(local))

    @classmethod
    def _load_local(cls, directory: Path) -> "TextEmbedder":
        cfg = json.loads((directory / CONFIG_FILE).read_text())
        if cfg.get("format") != MODEL_TYPE:
            raise ValueError(f"{directory} is not a TextEmbedder directory")
        model = cls(
            tower_from_config(cfg["tower_config"]),
            AutoTokenizer.from_pretrained(str(directory)),
            target_dim=cfg["target_dim"],
            hidden_dim=cfg["hidden_dim"],
            base_model=cfg["base_model"],
            pooling=cfg["pooling"],
            max_length=cfg["max_length"],
            lowercase=cfg["lowercase"],
        )
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return model.eval()
