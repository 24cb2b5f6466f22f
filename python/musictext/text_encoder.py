"""TextEmbedder: a pretrained text tower plus a head that predicts the whole enriched audio vector.

The audio target is ``[mean | robust | dmean]`` (three blocks of ``block_dim``) with ONE global L2
normalisation. The head therefore has a shared trunk and one output layer per block; the blocks
are concatenated and normalised globally, exactly like the target, so the model learns the
relative size of the blocks too (e.g. MuQ clips ≤120 s have all-zero robust/dmean blocks).

The head may instead predict coordinates in a fitted ``TargetSpace`` (standardised, whitened or
PCA-reduced targets; ``forward_space``), optionally through a low-rank bottleneck; ``forward``
always maps them back to the raw audio space, so exports and search see the same D-D vectors.
Head kinds: "blocks" (the per-block head above; with a pca/whiten space, one output layer of k),
"lowrank" (trunk -> Linear(hidden, r, no bias) -> Linear(r, out)).
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
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
from musictext.target_space import TargetSpace

log = logging.getLogger(__name__)

N_BLOCKS = 3
BLOCK_NAMES = ("mean", "robust", "dmean")
MODEL_TYPE = "musictext-text-embedder"
HEAD_KINDS = ("blocks", "lowrank")


def make_trunk(text_dim: int, hidden_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(text_dim, hidden_dim), nn.GELU(), nn.LayerNorm(hidden_dim))


class ProjectionHead(nn.Module):
    """Shared MLP trunk, then one linear output per enrichment block."""

    def __init__(self, text_dim: int, hidden_dim: int, target_dim: int):
        super().__init__()
        if target_dim % N_BLOCKS:
            raise ValueError(f"target_dim {target_dim} is not {N_BLOCKS} blocks")
        self.block_dim = target_dim // N_BLOCKS
        self.out_dim = int(target_dim)
        self.trunk = make_trunk(text_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            nn.Linear(hidden_dim, self.block_dim) for _ in range(N_BLOCKS)
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        h = self.trunk(pooled)
        return torch.cat([block(h) for block in self.blocks], dim=-1)


class LinearHead(nn.Module):
    """Shared MLP trunk, then one linear output (a pca/whiten space has no blocks)."""

    def __init__(self, text_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.out_dim = int(out_dim)
        self.trunk = make_trunk(text_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, out_dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(pooled))


class LowRankHead(nn.Module):
    """Shared MLP trunk, then a rank-``rank`` output map: hidden -> rank (no bias) -> out."""

    def __init__(self, text_dim: int, hidden_dim: int, out_dim: int, rank: int):
        super().__init__()
        if rank < 1:
            raise ValueError(f"low-rank head: rank must be a positive int, got {rank}")
        self.out_dim = int(out_dim)
        self.rank = int(rank)
        self.trunk = make_trunk(text_dim, hidden_dim)
        self.down = nn.Linear(hidden_dim, rank, bias=False)
        self.up = nn.Linear(rank, out_dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(self.trunk(pooled)))


def build_head(kind: str, text_dim: int, hidden_dim: int, space: TargetSpace, rank: int | None) -> nn.Module:
    """The head predicting ``space``'s coordinates ([B, space.dim])."""
    if kind == "lowrank":
        if rank is None:
            raise ValueError("a lowrank head needs head_rank")
        return LowRankHead(text_dim, hidden_dim, space.dim, rank)
    if kind != "blocks":
        raise ValueError(f"unknown head {kind!r}; known: {', '.join(HEAD_KINDS)}")
    if space.reduces:
        return LinearHead(text_dim, hidden_dim, space.dim)
    return ProjectionHead(text_dim, hidden_dim, space.dim)


def space_from_config(cfg: dict, target_dim: int) -> TargetSpace:
    """The (unfitted) space a saved config names; configs without one are raw."""
    if cfg.get("space") is None:
        return TargetSpace("raw", target_dim)
    space = TargetSpace.from_description(cfg["space"])
    if space.source_dim != target_dim:
        raise ValueError(f"config: target space maps {space.source_dim}-D targets, the model predicts {target_dim}-D")
    return space


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
    """Copy a finished local directory to ``uri`` (local path or bucket), replacing it.

    Never delete-then-copy: a process killed half-way must leave the old or the new directory
    whole. Locally the copy is made beside it and renamed into place; in a bucket (no rename)
    the new objects overwrite the old ones first and stale ones are removed after.
    """
    fs, path = storage.fs_for(uri)
    if not is_remote(uri):
        _swap_in_copy(Path(local), Path(path))
        return
    old = fs.find(path) if fs.exists(path) else []
    fs.put(str(local).rstrip("/") + "/", path, recursive=True)
    stale = [p for p in old if not (Path(local) / posixpath.relpath(p, path.rstrip("/"))).is_file()]
    if stale:
        fs.rm(stale)


def _swap_in_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to a temporary sibling of ``target``, then rename it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        shutil.copytree(source, staged, dirs_exist_ok=True)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    staged.chmod(0o755)  # mkdtemp's 0700 would hide the model from other readers
    retired = None
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{staged.name.rsplit('-', 1)[-1]}")
        target.rename(retired)
    staged.rename(target)
    if retired is not None:
        shutil.rmtree(retired)


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict as contiguous CPU tensors (what safetensors and torch.save get)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def tower_from_config(tower_config: dict) -> nn.Module:
    cfg = dict(tower_config)
    return drop_pooler(AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)))


def check_space(text_cfg, target_dim: int, space: TargetSpace | None) -> TargetSpace:
    """``space`` if it is the one ``text_cfg`` asks for (raw when None and the config says raw)."""
    kind = text_cfg.target_space
    if space is None:
        if kind != "raw":
            raise ValueError(f"text.target_space is {kind!r}: fit it first (TargetSpace.fit) and pass it as space")
        return TargetSpace("raw", target_dim)
    if space.kind != kind:
        raise ValueError(f"the given target space is {space.kind!r} but text.target_space is {kind!r}")
    if text_cfg.space_dim is not None and space.dim != text_cfg.space_dim:
        raise ValueError(f"the given {kind} space has k={space.dim}, text.space_dim is {text_cfg.space_dim}")
    return space


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
        head: str = "blocks",
        head_rank: int | None = None,
        space: TargetSpace | None = None,
    ):
        super().__init__()
        space = TargetSpace("raw", target_dim) if space is None else space
        if space.source_dim != target_dim:
            raise ValueError(f"target space maps {space.source_dim}-D targets, the model predicts {target_dim}-D")
        self.tower = tower
        self.tokenizer = tokenizer
        self.text_dim = int(tower.config.hidden_size)
        self.head = build_head(head, self.text_dim, hidden_dim, space, head_rank)
        # After the head: state dict keys keep today's order (tower, head), then space buffers.
        self.space = space
        self.head_kind = head
        self.head_rank = int(head_rank) if head == "lowrank" else None
        self.target_dim = int(target_dim)
        self.hidden_dim = int(hidden_dim)
        self.base_model = base_model
        self.pooling = pooling
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_base(cls, text_cfg, target_dim: int, space: TargetSpace | None = None) -> "TextEmbedder":
        """Fresh head on the pretrained tower named by a TextConfig.

        ``space``: the fitted TargetSpace of ``text_cfg.target_space`` (``TargetSpace.fit``);
        None only for a raw space.
        """
        space = check_space(text_cfg, target_dim, space)
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
            head=text_cfg.head,
            head_rank=text_cfg.head_rank,
            space=space,
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

    @property
    def block_dim(self) -> int:
        """Size of one enrichment block of the raw output."""
        return self.target_dim // N_BLOCKS

    def n_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameters; the space's buffers are not parameters."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def n_head_parameters(self) -> int:
        return sum(p.numel() for p in self.head.parameters())

    # -- compute ------------------------------------------------------------------------------
    def head_output(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, space.dim]: the head's unnormalised training-space prediction."""
        out = self.tower(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(pool(out.last_hidden_state, attention_mask, self.pooling))

    def forward_space(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, space.dim], L2-normalised: what a loss compares with ``encode_targets``."""
        return F.normalize(self.head_output(input_ids, attention_mask), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, target_dim] in the raw audio space, globally L2-normalised like the audio targets."""
        return F.normalize(self.space.decode(self.head_output(input_ids, attention_mask)), dim=-1)

    def encode_targets(self, target: torch.Tensor) -> torch.Tensor:
        """Raw targets [B, target_dim] -> [B, space.dim] L2-normalised training-space targets."""
        return F.normalize(self.space.encode(target), dim=-1)

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
            "block_dim": self.block_dim,
            "hidden_dim": self.hidden_dim,
            "head": self.head_kind,
            "head_rank": self.head_rank,
            "space": self.space.describe(),
            "text_dim": self.text_dim,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "lowercase": self.lowercase,
            "tower_config": self.tower.config.to_dict(),
        }

    def projection_state(self) -> dict[str, torch.Tensor]:
        """The head's weights plus the space's buffers (``space.*``): all but the tower."""
        space = {f"space.{k}": v for k, v in cpu_state(self.space).items()}
        return {**cpu_state(self.head), **space}

    def load_projection_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``projection_state`` (strict on both parts)."""
        space = {k.removeprefix("space."): v for k, v in state.items() if k.startswith("space.")}
        self.head.load_state_dict({k: v for k, v in state.items() if not k.startswith("space.")})
        self.space.load_state_dict(space)

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
            # Directories saved before heads and spaces existed: blocks head, raw space.
            head=cfg.get("head", "blocks"),
            head_rank=cfg.get("head_rank"),
            space=space_from_config(cfg, cfg["target_dim"]),
        )
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return model.eval()
