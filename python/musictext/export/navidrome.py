"""Export a trained text embedder in the form Navidrome's text service loads.

``{name}_best_r1.pt`` is ``torch.save`` of a dict with exactly the keys ``config``,
``text_encoder_state_dict``, ``projection_state_dict`` and ``metrics``. ``config`` holds the
documented ``audio_encoder``, ``audio_dim``, ``text_model_name``, ``text_dim`` and ``hidden_dim``
plus the few settings the query path needs to reproduce training (pooling, max_length,
lowercase, block_dim, family). The text tower is rebuilt from ``text_model_name``'s config and
tokenizer, so the file carries weights only. ``metrics`` is the evaluation's dict (fractions)
plus flat percentages ``t2a_R@K``, ``a2t_R@K``, ``chance_R@K`` (Navidrome's loader reads
``t2a_R@1`` as a percentage).

``{name}_text_embedder/`` is the same model saved with ``save_pretrained`` for our own tools,
plus ``model.onnx`` (checked against PyTorch) and the model card ``README.md``, also written as
``{name}_MODEL_CARD.md`` beside the .pt. A model trained in a pca/whiten target space also gets
its basis there as ``reduced_basis.npz`` (search.basis's contract), so search indexes the audio
vectors in the space the model was trained in.

A model with another head or a target space records them in ``config`` (``head``, ``head_rank``,
``space``); ``projection_state_dict`` then holds the head's weights and the space's buffers
(``space.*``). A plain model's .pt is as before.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from musictext import storage
from musictext.config import FamilyConfig
from musictext.export.card import normalise_sources, render_card, sources_from_index
from musictext.export.onnx_export import export_checked_onnx
from musictext.hub import MINILM_NAMES, resolve_pretrained
from musictext.layout import model_location
from musictext.target_space import BASIS_FILE
from musictext.text_encoder import TextEmbedder, cpu_state, drop_pooler, publish_dir, space_from_config

log = logging.getLogger(__name__)

CHECKPOINT_KEYS = ("config", "text_encoder_state_dict", "projection_state_dict", "metrics")
CONFIG_KEYS = ("audio_encoder", "audio_dim", "text_model_name", "text_dim", "hidden_dim")
EMBEDDER_SUFFIX = "text_embedder"  # {name}_text_embedder/: unique when families share checkpoints/
CARD_FILE = "README.md"  # the model card inside {name}_text_embedder/ (Hugging Face's place for it)
# Evaluation direction -> prefix of its flat percentage keys in the checkpoint's metrics.
PERCENT_PREFIXES = {"text_to_audio": "t2a", "audio_to_text": "a2t", "chance": "chance"}
_RECALL = re.compile(r"R@\d+")


def checkpoint_name(cfg: FamilyConfig) -> str:
    return f"{cfg.export.name}_best_r1.pt"


def portable_model_name(ref: str) -> str:
    # The sidecar resolves the name itself: give it the hub id, not our offline alias.
    return "sentence-transformers/all-MiniLM-L6-v2" if ref in MINILM_NAMES else ref


def checkpoint_metrics(metrics: dict) -> dict:
    """The evaluation's dict (fractions) plus ``t2a_R@K``/``a2t_R@K``/``chance_R@K`` in percent
    (R@1 0.32 -> 32.0) and ``percent_keys`` naming them."""
    out = dict(metrics)
    percent = {}
    for direction, prefix in PERCENT_PREFIXES.items():
        for key, value in (metrics.get(direction) or {}).items():
            if _RECALL.fullmatch(key) and value is not None:
                percent[f"{prefix}_{key}"] = round(100.0 * float(value), 6)
    if "text_to_audio" not in metrics:
        log.warning("no text_to_audio metrics given: the checkpoint has no t2a_R@1")
    out.update(percent, percent_keys=sorted(percent))
    return out


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
            "block_dim": model.block_dim,
            "family": cfg.family,
            "head": model.head_kind,
            "head_rank": model.head_rank,
            "space": model.space.describe(),
        },
        "text_encoder_state_dict": cpu_state(model.tower),
        "projection_state_dict": model.projection_state(),
        "metrics": checkpoint_metrics(metrics),
    }


def embedder_dir_name(cfg: FamilyConfig) -> str:
    return f"{cfg.export.name}_{EMBEDDER_SUFFIX}"


def card_name(cfg: FamilyConfig) -> str:
    return f"{cfg.export.name}_MODEL_CARD.md"


def audio_facts(cfg: FamilyConfig) -> dict:
    a = cfg.audio
    return {"model": a.model, "target_dim": a.target_dim, "window_dim": a.window_dim,
            "sample_rate": a.sample_rate, "random_init": a.random_init}


def text_facts(model: TextEmbedder) -> dict:
    facts = {k: v for k, v in model.describe().items() if k != "tower_config"}
    facts["base_model"] = portable_model_name(model.base_model)
    facts["parameters"] = sum(p.numel() for p in model.parameters())
    return facts


def resolve_sources(clips_index: str | None, sources) -> dict:
    """The training data's sources: given ones win, else read from the run's clips index."""
    if sources is not None:
        return normalise_sources(sources)
    return sources_from_index(clips_index) if clips_index else {}


def export_family(
    model_dir: str,
    metrics: dict,
    out_dir: str,
    cfg: FamilyConfig,
    clips_index: str | None = None,
    sources=None,
) -> dict:
    """Write ``{name}_best_r1.pt``, ``{name}_MODEL_CARD.md`` and ``{name}_text_embedder/``
    (save_pretrained + model.onnx + README.md, + reduced_basis.npz for a pca/whiten space) into ``out_dir``.

    The card's data sources come from ``sources`` (see ``card.normalise_sources``) or, when not
    given, from the run's clips index dir ``clips_index``.
    """
    t0 = time.perf_counter()
    model = TextEmbedder.from_pretrained(model_location(model_dir))
    if model.target_dim != cfg.audio.target_dim:
        raise ValueError(
            f"{cfg.family}: model predicts {model.target_dim}-D but the config's audio space is "
            f"{cfg.audio.target_dim}-D; refusing to export into the wrong space"
        )
    ckpt = build_checkpoint(model, metrics, cfg)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    ckpt_uri = storage.join(out_dir, checkpoint_name(cfg))
    emb_uri = storage.join(out_dir, embedder_dir_name(cfg))
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        local = Path(tmp) / "model"
        model.save_pretrained(local)
        if model.space.reduces:
            model.space.save_basis(str(local / BASIS_FILE))
        onnx = export_checked_onnx(model, local)  # first: a failed check leaves nothing in out_dir
        card = render_card(name=cfg.export.name, family=cfg.family, audio=audio_facts(cfg), text=text_facts(model),
                           metrics=ckpt["metrics"], sources=resolve_sources(clips_index, sources), onnx=onnx)
        (local / CARD_FILE).write_text(card)
        storage.write_bytes(ckpt_uri, buf.getvalue())
        publish_dir(local, emb_uri)
    card_uri = storage.join(out_dir, card_name(cfg))
    storage.write_bytes(card_uri, card.encode())
    log.info("exported %s (%d-D, %.1f MB) to %s", cfg.export.name, model.target_dim,
             len(buf.getvalue()) / 1e6, ckpt_uri)
    return {"name": cfg.export.name, "checkpoint": ckpt_uri, "text_embedder": emb_uri, "model_card": card_uri,
            "audio_dim": model.target_dim, "bytes": len(buf.getvalue()),
            "onnx": storage.join(emb_uri, onnx["file"]), "onnx_bytes": onnx["bytes"],
            "reduced_basis": storage.join(emb_uri, BASIS_FILE) if model.space.reduces else None,
            "onnx_max_abs_diff": onnx["max_abs_diff"], "onnx_seconds": round(onnx["seconds"], 3),
            "export_seconds": round(time.perf_counter() - t0, 3)}


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
        head=cfg.get("head", "blocks"),
        head_rank=cfg.get("head_rank"),
        space=space_from_config(cfg, cfg["audio_dim"]),
    )
    model.load_projection_state(ckpt["projection_state_dict"])
    if model.text_dim != cfg["text_dim"]:
        raise ValueError(f"{path}: base model gives {model.text_dim}-D text, checkpoint says {cfg['text_dim']}")
    return model.eval()
