"""MERT's trust_remote_code runs hub code only at the pinned, reviewed commit.

The weights cannot be downloaded here, so the loader test records what ``from_pretrained``
receives (the tiny random-init HuBERT stands in for the loaded model).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from musictext.audio.families import mert
from musictext.config import load_family_config

REPO = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _audio(**over) -> dict:
    base = {"kind": "mert", "model": "m-a-p/MERT-v1-330M", "sample_rate": 24000, "window_s": 30, "hop_s": 5,
            "num_hidden_layers": 2, "hidden_size": 32}
    return {**base, **over}


def test_shipped_config_pins_a_full_commit():
    for profile in ("production", "demo"):
        audio = load_family_config("mert", profile).audio
        assert audio.trust_remote_code is True
        assert mert._COMMIT.fullmatch(audio.revision), audio.revision


@pytest.mark.parametrize("revision", [None, "main", "v1.0", "0e06c98", SHA.upper(), SHA + "0"])
def test_remote_code_without_a_commit_id_is_refused(revision):
    with pytest.raises(ValidationError, match=r"audio\.revision .*40-hex commit"):
        mert.MertAudioConfig(**_audio(revision=revision))


def test_revision_is_optional_only_without_remote_code():
    cfg = mert.MertAudioConfig(**_audio(trust_remote_code=False))
    assert cfg.revision is None
    assert mert.MertAudioConfig(**_audio(revision=SHA)).trust_remote_code is True


def test_loader_passes_the_revision_to_every_from_pretrained(monkeypatch):
    calls = []
    model, processor = mert.tiny_mert(24000, 2, 32, {"num_attention_heads": 2, "conv_channels": 32}, seed=0)

    def recorder(result):
        def from_pretrained(ref, **kwargs):
            calls.append((ref, kwargs))
            return result
        return staticmethod(from_pretrained)

    # The module object now in sys.modules: importing some transformers models replaces the lazy
    # module, so a reference taken at import time may no longer be what load_mert imports from.
    transformers = sys.modules["transformers"]
    monkeypatch.setattr(transformers, "AutoModel", type("AutoModel", (), {"from_pretrained": recorder(model)}))
    monkeypatch.setattr(transformers, "Wav2Vec2FeatureExtractor",
                        type("Wav2Vec2FeatureExtractor", (), {"from_pretrained": recorder(processor)}))
    loaded = mert.load_mert(mert.MertAudioConfig(**_audio(revision=SHA)), torch.device("cpu"))
    assert loaded.sample_rate == 24000
    assert calls == [
        ("m-a-p/MERT-v1-330M", {"revision": SHA, "trust_remote_code": True}),
        ("m-a-p/MERT-v1-330M", {"revision": SHA}),
    ]


def _remote_code_calls_without_revision(source: str) -> list[int]:
    """Lines of calls that pass trust_remote_code (other than a literal False) but no revision."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        trusted = "trust_remote_code" in kw and not (
            isinstance(kw["trust_remote_code"], ast.Constant) and kw["trust_remote_code"].value is False)
        if trusted and "revision" not in kw:
            bad.append(node.lineno)
    return bad


def test_no_trust_remote_code_call_without_revision():
    assert _remote_code_calls_without_revision("f(x, trust_remote_code=True)") == [1]
    assert _remote_code_calls_without_revision("f(x, trust_remote_code=False)") == []
    found = {}
    for root in ("python", "components", "pipelines"):
        for path in (REPO / root).rglob("*.py"):
            lines = _remote_code_calls_without_revision(path.read_text())
            if lines:
                found[str(path.relative_to(REPO))] = lines
    assert not found, f"trust_remote_code without revision= at {found}"
