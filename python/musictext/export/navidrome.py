"""Export a trained text embedder in the form Navidrome's text service loads.

``{name}_best_r1.pt`` is ``torch.save`` of a dict with exactly the keys ``config``,
``text_encoder_state_dict``, ``projection_state_dict`` and ``metrics``. ``config`` holds the
documented ``audio_encoder``, ``audio_dim``, ``text_model_name``, ``text_dim`` and ``hidden_dim``
plus the few settings the query path needs to reproduce training (pooling, max_length,
lowercase, block_dim). The text tower is rebuilt from ``text_model_name``'s config and
tokenizer, so the file carries weights only. ``{name}_text_embedder/`` is the same model saved with
``save_pretrained`` for our own tools.
"""

from __future__ import annotations

import io
import logging

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from musictext import storage
from musictext.config import FamilyConfig
from musictext.hub import MINILM_NAMES, resolve_pretrained
from musictext.layout import model_location
from musictext.text_encoder import TextEmbedder, cpu_state, drop_pooler

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("config", "text_encoder_state_dict", "projection_state_dict", "metrics")
CONFIG_KEYS = ("audio_encoder", "audio_dim", "text_model_name", "text_dim", "hidden_dim")
EMBEDDER_SUFFIX = "text_embedder"  # {name}_text_embedder/: unique when families share checkpoints/


def checkpoint_name(cfg: FamilyConfig) -> str:
    return f"{cfg.export.name}_best_r1.pt"


def portable_model_name(ref: str) -> str:
    # The sidecar resolves the name itself: give it the hub id, not our offline alias.
    return "sentence-transformers/all-MiniLM-L6-v2" if ref in MINILM_NAMES else ref


def build_checkpoint(model: TextEmbedder, metrics: dict, cfg: FamilyConfig) -> dict:
    return {
        "config": {
            "audio_encoder": cfg.export.name,
            "audio_dim": model.target_dim,
            "text_model_name": portable_model_name(model.base_model),
            "text_dim": model.text_dim,
            "hidden_dim": model.hidden_dim,
            "pooling": model.pooling,
            "max_length": model.max_length,
            "lowercase": model.lowercase,
            "block_dim": model.head.block_dim,
        },
        "text_encoder_state_dict": cpu_state(model.tower),
        "projection_state_dict": cpu_state(model.head),
        "metrics": metrics,
    }


def embedder_dir_name(cfg: FamilyConfig) -> str:
    return f"{cfg.export.name}_{EMBEDDER_SUFFIX}"


def export_family(model_dir: str, metrics: dict, out_dir: str, cfg: FamilyConfig) -> dict:
    """Write ``{name}_best_r1.pt`` and ``{name}_text_embedder/`` into ``out_dir``."""
    model = TextEmbedder.from_pretrained(model_location(model_dir))
    if model.target_dim != cfg.audio.target_dim:
        raise ValueError(
            f"{cfg.family}: model predicts {model.target_dim}-D but the config's audio space is "
            f"{cfg.audio.target_dim}-D; refusing to export into the wrong space"
        )
    buf = io.BytesIO()
    torch.save(build_checkpoint(model, metrics, cfg), buf)
    ckpt_uri = storage.join(out_dir, checkpoint_name(cfg))
    storage.write_bytes(ckpt_uri, buf.getvalue())
    emb_uri = storage.join(out_dir, embedder_dir_name(cfg))
    model.save_to(emb_uri)
    log.info("exported %s (%d-D, %.1f MB) to %s", cfg.export.name, model.target_dim,
             len(buf.getvalue()) / 1e6, ckpt_uri)
    return {"name": cfg.export.name, "checkpoint": ckpt_uri, "text_embedder": emb_uri,
            "audio_dim": model.target_dim, "bytes": len(buf.getvalue())}


def load_exported(path: str) -> TextEmbedder:
    """Rebuild the query-side model from the .pt plus the base model's config and tokenizer.

    The returned object offers ``embed_text(str) -> [dim]`` and ``embed_texts(list) -> [N, dim]``,
    L2-normalised.
    """
    ckpt = torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu", weights_only=True)
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a text-embedder checkpoint (missing {missing})")
    cfg = ckpt["config"]
    base = resolve_pretrained(cfg["text_model_name"])
    tower = drop_pooler(AutoModel.from_config(AutoConfig.from_pretrained(base)))
    tower.load_state_dict(ckpt["text_encoder_state_dict"])
    model = TextEmbedder(
        tower,
        AutoTokenizer.from_pretrained(base),
        target_dim=cfg["audio_dim"],
        hidden_dim=cfg["hidden_dim"],
        base_model=cfg["text_model_name"],
        pooling=cfg.get("pooling", "mean"),
        max_length=cfg.get("max_length", 64),
        lowercase=cfg.get("lowercase", True),
    )
    model.head.load_state_dict(ckpt["projection_state_dict"])
    if model.text_dim != cfg["text_dim"]:
        raise ValueError(f"{path}: base model gives {model.text_dim}-D text, checkpoint says {cfg['text_dim']}")
    return model.eval()
