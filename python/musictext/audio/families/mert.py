"""MERT ("mert"): per-window frame means of all L+1 hidden states -> 76,800 = 3 x 25 x 1024."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import model_validator

from musictext.audio.families.base import FamilySpec, LibrosaLoadedConfig, Loaded, WindowedAdapter
from musictext.hub import resolve_pretrained
from musictext.lazy import lazy_module

# Loaded on first use, as the stand-in's builder below: the clip stage reads this module's config.
torch = lazy_module("torch")


# A full git commit id: branch and tag names can move, so they do not pin reviewed code.
_COMMIT = re.compile(r"[0-9a-f]{40}")


class MertAudioConfig(LibrosaLoadedConfig):
    kind: Literal["mert"]
    num_hidden_layers: int  # transformer layers (24) -> 25 hidden states
    hidden_size: int  # 1024
    # MERT's model class lives in the hub repository (modeling_MERT.py), so loading it runs that
    # repository's Python. It runs only at a reviewed commit: trust_remote_code needs ``revision``,
    # and every from_pretrained call gets it (a local or bucket copy is the operator's own code;
    # transformers ignores the revision there).
    trust_remote_code: bool = True
    revision: str | None = None

    @model_validator(mode="after")
    def _remote_code_is_pinned(self) -> "MertAudioConfig":
        if self.trust_remote_code and not (self.revision and _COMMIT.fullmatch(self.revision)):
            raise ValueError(
                f"audio.revision {self.revision!r} for {self.model}: trust_remote_code runs the hub "
                f"repository's code, so pin the reviewed commit as a 40-hex commit id (not a branch or tag)"
            )
        return self

    @property
    def window_dim(self) -> int:
        return (int(self.num_hidden_layers) + 1) * int(self.hidden_size)


class MertAdapter(WindowedAdapter):
    """Feature extractor, ``output_hidden_states``, mean over frames of all L+1 states."""

    def run(self, batch):
        processor, model = self.loaded.processor, self.loaded.model
        arrays = [np.asarray(w.detach().cpu(), dtype=np.float32) for w in batch]
        inputs = processor(arrays, sampling_rate=self.loaded.sample_rate, return_tensors="pt")
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        out = model(**inputs, output_hidden_states=True)
        # [L+1, B, frames, H] -> mean over frames in float32 -> [B, (L+1)*H], layer-major.
        states = torch.stack([h.float() for h in out.hidden_states]).mean(dim=2)
        flat = states.permute(1, 0, 2).reshape(states.shape[1], -1)
        return [row[:, None] for row in flat]


def tiny_mert(sample_rate: int, num_hidden_layers: int, hidden_size: int, arch: dict, seed: int):
    """A small HubertModel (MERT's interface) and its feature extractor, seeded."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from musictext.audio.random_init import seeded

    arch = {k: v for k, v in arch.items() if k != "seed"}
    conv = int(arch.pop("conv_channels", min(512, max(32, hidden_size))))
    heads = int(arch.pop("num_attention_heads", max(1, hidden_size // 64)))
    kwargs = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        conv_dim=(conv,) * 7,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=min(16, hidden_size),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )
    kwargs.update(arch)
    config = HubertConfig(**kwargs)
    with seeded(seed):
        model = HubertModel(config)
    model.eval()
    # MERT-v1-330M's published preprocessor_config.json (created in commit d0726b6 of
    # huggingface.co/m-a-p/MERT-v1-330M, unchanged since): feature_size 1, sampling_rate 24000,
    # padding_side right, padding_value 0, do_normalize false, return_attention_mask true.
    processor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=sample_rate,
        padding_side="right",
        padding_value=0.0,
        do_normalize=False,
        return_attention_mask=True,
    )
    return model, processor


def build_tiny_mert(cfg: MertAudioConfig, device: torch.device) -> Loaded:
    from musictext.audio.random_init import init_seed

    model, processor = tiny_mert(
        cfg.sample_rate,
        int(cfg.num_hidden_layers),
        int(cfg.hidden_size),
        dict(cfg.random_init_arch),
        init_seed(cfg.kind, cfg.random_init_arch),
    )
    return Loaded(model.to(device).eval(), processor, int(processor.sampling_rate))


def load_mert(cfg: MertAudioConfig, device: torch.device) -> Loaded:
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    ref = resolve_pretrained(cfg.model)
    # Both files from the same pinned commit; the feature extractor is transformers' own class.
    model = AutoModel.from_pretrained(ref, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    processor = Wav2Vec2FeatureExtractor.from_pretrained(ref, revision=cfg.revision)
    got = (int(model.config.num_hidden_layers), int(model.config.hidden_size))
    want = (int(cfg.num_hidden_layers), int(cfg.hidden_size))
    if got != want:
        raise ValueError(f"{cfg.model}: model has (layers, hidden) = {got} but the config says {want}")
    return Loaded(model.to(device).eval(), processor, int(processor.sampling_rate))


FAMILY = FamilySpec(
    name="mert",
    config=MertAudioConfig,
    adapter=MertAdapter,
    load_checkpoint=load_mert,
    build_random_init=build_tiny_mert,
)
