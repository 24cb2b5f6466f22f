"""The family registry: one module per family, the config union built from it, and a new
family added with one module and one YAML."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from musictext import config
from musictext.audio import families
from musictext.audio.families import FAMILY_DIRS_ENV, add_family, family, family_for_kind
from musictext.audio.families.base import FamilySpec
from musictext.audio.families.mert import MertAudioConfig
from musictext.audio.families.muq import MuQAudioConfig
from musictext.audio.families.music2latent import Music2LatentAudioConfig
from musictext.config import CONFIG_DIR_ENV, FamilyConfig, config_dir, load_family_config

PROFILES = ("production", "demo")
CONFIG_CLASS = {"muq": MuQAudioConfig, "mert": MertAudioConfig, "music2latent": Music2LatentAudioConfig}


def test_registry_lists_exactly_the_three_families():
    assert families.FAMILY_NAMES == ("mert", "muq", "music2latent")
    assert config.FAMILIES is families.FAMILY_NAMES  # the one source of family names
    kinds = {name: family(name).kind for name in families.FAMILY_NAMES}
    assert kinds == {"muq": "muq_mulan", "mert": "mert", "music2latent": "music2latent"}
    assert all(family_for_kind(kind).name == name for name, kind in kinds.items())
    exports = {name: family(name).export_name for name in families.FAMILY_NAMES}
    assert exports == {"muq": "muq", "mert": "mert", "music2latent": "latent"}


def test_unknown_names_are_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown family 'jukebox'.*'muq'"):
        family("jukebox")
    with pytest.raises(ValueError, match=r"unknown audio kind 'jukebox'.*'muq_mulan'"):
        family_for_kind("jukebox")
    with pytest.raises(ValueError, match="unknown family 'jukebox'"):
        load_family_config("jukebox")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", sorted(CONFIG_CLASS))
def test_every_yaml_validates_with_its_family_class(name, profile):
    cfg = load_family_config(name, profile)
    assert cfg.family == name
    assert type(cfg.audio) is CONFIG_CLASS[name] is family(name).config
    assert cfg.export.name == family(name).export_name
    assert cfg.audio.random_init is (profile == "demo")


def test_production_target_dims():
    dims = {name: load_family_config(name).audio.target_dim for name in CONFIG_CLASS}
    assert dims == {"muq": 1536, "mert": 76800, "music2latent": 576}


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [("muq", "latent_channels", 64), ("music2latent", "embed_dim", 512), ("mert", "clips_per_call", 4),
     ("music2latent", "window_s", 30)],
)
def test_a_field_of_another_family_is_refused(name, field, value):
    kind = family(name).kind
    with pytest.raises(ValidationError, match=rf"audio of kind '{kind}' has no field \['{field}'\]"):
        load_family_config(name, "production", {"audio": {field: value}})


def test_a_family_needs_its_own_fields():
    with pytest.raises(ValidationError, match=r"hidden_size\s+Field required"):
        MertAudioConfig.model_validate({"kind": "mert", "model": "m", "sample_rate": 24000,
                                        "window_s": 30, "hop_s": 5, "num_hidden_layers": 24})


def test_audio_kind_and_export_name_must_match_the_family():
    raw = load_family_config("mert").model_dump()
    with pytest.raises(ValidationError, match="family 'muq' takes audio of kind 'muq_mulan', not 'mert'"):
        FamilyConfig.model_validate({**raw, "family": "muq", "export": {"name": "muq"}})
    with pytest.raises(ValidationError, match="family 'mert' exports as 'mert', not 'latent'"):
        FamilyConfig.model_validate({**raw, "export": {"name": "latent"}})


def test_two_families_cannot_share_a_kind():
    registry = dict(families.REGISTRY)
    clash = family("mert")
    twin = FamilySpec(name="mert2", config=clash.config, adapter=clash.adapter,
                      load_checkpoint=clash.load_checkpoint, build_random_init=clash.build_random_init)
    with pytest.raises(ValueError, match="families 'mert' and 'mert2' share the kind 'mert'"):
        add_family(registry, twin)
    assert registry == families.REGISTRY


# ----------------------------------------------------------------- a new family
TOY_MODULE = '''
"""A toy family: per window, the RMS of ``bands`` equal slices of the window."""

from typing import Literal

import torch

from musictext.audio.families.base import FamilySpec, Loaded, WindowedAdapter, WindowedAudioConfig


class ToyAudioConfig(WindowedAudioConfig):
    kind: Literal["toy_rms"]
    bands: int

    @property
    def window_dim(self) -> int:
        return self.bands


class SliceRMS(torch.nn.Module):
    def __init__(self, bands: int):
        super().__init__()
        self.bands = bands

    def forward(self, wavs):  # [B, samples] -> [B, bands]
        return wavs.reshape(wavs.shape[0], self.bands, -1).pow(2).mean(-1).sqrt()


class ToyAdapter(WindowedAdapter):
    def run(self, batch):
        return [row[:, None] for row in self.loaded.model(batch)]


def build(cfg, device):
    return Loaded(SliceRMS(cfg.bands).to(device), None, cfg.sample_rate)


def load(cfg, device):
    saved = torch.load(cfg.model)
    return Loaded(SliceRMS(saved["bands"]).to(device), None, saved["sample_rate"])


FAMILY = FamilySpec(name="toy", config=ToyAudioConfig, adapter=ToyAdapter,
                    load_checkpoint=load, build_random_init=build)
'''

TOY_YAML = """
family: toy
audio: {kind: toy_rms, model: toy.pt, sample_rate: 8000, window_s: 1, hop_s: 0.5, bands: 8}
export: {name: toy}
profiles:
  demo:
    audio: {random_init: true}
"""

# Runs where MUSICTEXT_FAMILY_DIRS and MUSICTEXT_CONFIG_DIR name the toy's module and YAML.
TOY_CHECK = """
import json, torch
from musictext.audio import build_embedder, cut_windows, enrich
from musictext.config import FAMILIES, load_family_config

x = torch.randn(8000 * 3 + 123, generator=torch.Generator().manual_seed(0))
windows = torch.stack(cut_windows(x, 8000, 4000))
want = enrich(windows.reshape(len(windows), 8, -1).pow(2).mean(-1).sqrt().T)
out = {"families": FAMILIES}
for profile in ("demo", "production"):
    cfg = load_family_config("toy", profile)
    emb = build_embedder(cfg.audio, device="cpu")
    got = emb.embed_audio_tensor(x, 8000)
    out[profile] = {"class": type(cfg.audio).__name__, "target_dim": cfg.audio.target_dim,
                    "shape": list(got.shape), "max_diff": float((got - want).abs().max())}
try:
    load_family_config("toy", "production", {"audio": {"latent_channels": 4}})
except ValueError as err:
    out["foreign_field"] = str(err)
out["muq_demo_dim"] = load_family_config("muq", "demo").audio.target_dim
print(json.dumps(out))
"""


def _run_with_family_dir(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    """A fresh interpreter (families are discovered at import) seeing tmp_path's family dir."""
    env = {**os.environ, FAMILY_DIRS_ENV: str(tmp_path / "families"), CONFIG_DIR_ENV: str(tmp_path / "configs")}
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def test_a_new_family_is_one_module_and_one_yaml(tmp_path):
    import torch

    (tmp_path / "families").mkdir()
    (tmp_path / "families" / "toy.py").write_text(TOY_MODULE)
    shutil.copytree(config_dir(), tmp_path / "configs")
    (tmp_path / "configs" / "toy.yaml").write_text(TOY_YAML)
    torch.save({"bands": 8, "sample_rate": 8000}, tmp_path / "toy.pt")  # the "checkpoint"

    proc = _run_with_family_dir(tmp_path, TOY_CHECK)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["families"] == ["mert", "muq", "music2latent", "toy"]
    for profile in ("demo", "production"):
        assert out[profile]["class"] == "ToyAudioConfig" and out[profile]["target_dim"] == 24
        assert out[profile]["shape"] == [24] and out[profile]["max_diff"] < 1e-6, out[profile]
    assert "audio of kind 'toy_rms' has no field ['latent_channels']" in out["foreign_field"]
    assert out["muq_demo_dim"] == load_family_config("muq", "demo").audio.target_dim


def test_a_module_in_the_family_package_must_declare_its_family(tmp_path):
    (tmp_path / "families").mkdir()
    (tmp_path / "families" / "helpers.py").write_text("SCALE = 2\n")
    (tmp_path / "configs").mkdir()
    proc = _run_with_family_dir(tmp_path, "import musictext.config")
    assert proc.returncode != 0
    assert "musictext.audio.families.helpers is in the family package" in proc.stderr
    assert "FAMILY = FamilySpec" in proc.stderr
