"""check_run_params: every bad pipeline parameter is named, all at once, before any work starts."""

from __future__ import annotations

import shutil

import pytest
import yaml

from musictext.config import CONFIG_DIR_ENV, config_dir
from musictext.ingest.plan import MAX_SHARDS
from musictext.params import check_run_params
from musictext_kfp.cli import pipeline_inputs

# The laptop demo's parameters: the pipeline's defaults, as ``musictext run --local`` gives them.
GOOD = {name: spec.default for name, spec in pipeline_inputs().items()}


def problems(**changes) -> list[str]:
    """The problem lines check_run_params reports for GOOD with ``changes`` ([] when it passes)."""
    try:
        check_run_params({**GOOD, **changes})
    except ValueError as err:
        return [line.strip() for line in str(err).splitlines()[1:]]
    return []


def test_the_demo_parameters_and_a_partial_set_pass():
    assert problems() == []
    # The fan-out dry run gives only the listing's parameters.
    check_run_params({k: GOOD[k] for k in ("sources", "source_options", "folder", "corpus_size", "shard_size", "seed")})
    check_run_params({})


@pytest.mark.parametrize("name,value,words", [
    ("epochs_stage1", -1, "epochs_stage1: Input should be greater than or equal to 0 (got -1)"),
    ("epochs_stage2", 1.5, "epochs_stage2: Input should be a valid integer (got 1.5)"),
    ("batch_size", -4, "batch_size: Input should be greater than or equal to 0"),
    ("batch_size", 1, "batch_size: Input should be greater than or equal to 2"),  # the config's own rule
    ("clip_seconds", -6.0, "clip_seconds: Input should be greater than 0 (got -6.0)"),
    ("clip_seconds", 0, "clip_seconds: Input should be greater than 0"),
    ("clip_seconds", float("nan"), "clip_seconds: Input should be a finite number"),
    ("clip_seconds", "6", "clip_seconds: Input should be a valid number"),
    ("max_clips_per_track", 0, "max_clips_per_track: Input should be greater than or equal to 1"),
    ("shard_size", 0, "shard_size: Input should be greater than or equal to 1"),
    ("corpus_size", 0, "corpus_size: Input should be greater than or equal to 1"),
    ("corpus_size", True, "corpus_size: Input should be a valid integer (got True)"),
    ("seed", -1, "seed: Input should be greater than or equal to 0"),
    ("clip_format", "mp3", "clip_format: Input should be 'wav' or 'flac' (got 'mp3')"),
    ("profile", "bogus", "no profile 'bogus'"),
    ("families", ["muq", "jukebox"], "families: unknown ['jukebox']"),
    ("families", [], "families: List should have at least 1 item"),
    ("families", ["muq", "muq"], "families: listed more than once: ['muq']"),
    ("sources", ["synthetic", "nope"], "unknown source 'nope'"),
    ("sources", ["synthetic", "synthetic"], "sources listed more than once"),
    ("source_options", {"synthetic": {"bogus_option": 1}}, "bogus_option: Extra inputs are not permitted"),
    ("folder", "/music", "the `folder` source is not among the sources"),
    ("train_launcher", "slurm", "train_launcher: must be one of ['local', 'pytorchjob', 'trainjob']"),
    ("train_nodes", 0, "train_nodes: Input should be greater than or equal to 1"),
    ("procs_per_node", 0, "procs_per_node: Input should be greater than or equal to 1"),
    ("gpus_per_node", -1, "gpus_per_node: Input should be greater than or equal to 0"),
    ("train_timeout_minutes", -5, "train_timeout_minutes: Input should be greater than or equal to 0"),
    ("train_image", "", "train_image: String should have at least 1 character"),
    ("gpu_node_selector", {"pool": 1}, "gpu_node_selector: Input should be a valid string (got 1)"),
    ("train_options", {"no_such_field": "x"}, "no launcher takes ['no_such_field']"),
    ("m2l_native_rate", "yes", "m2l_native_rate: Input should be a valid boolean"),
])
def test_each_bad_parameter_is_named(name, value, words):
    found = problems(**{name: value})
    assert found and all(name in line or "profile" in line for line in found), found
    assert any(words in line for line in found), found


def test_every_problem_is_reported_in_one_error():
    found = problems(epochs_stage1=-1, profile="bogus", clip_seconds=-1.0, shard_size=0, train_launcher="x")
    for name in ("epochs_stage1", "profile 'bogus'", "clip_seconds", "shard_size", "train_launcher"):
        assert any(line.startswith(name) for line in found), (name, found)


def test_too_many_shards_for_the_fan_out():
    assert problems(corpus_size=MAX_SHARDS, shard_size=1) == []
    assert f"{MAX_SHARDS + 1} shards, more than {MAX_SHARDS}" in " ".join(problems(corpus_size=MAX_SHARDS + 1,
                                                                                  shard_size=1))
    # Each source is cut into its own shards: two sources of half as many items are too many too.
    half = MAX_SHARDS // 2 + 1
    found = problems(sources=["synthetic", "folder"], folder="/music", corpus_size=half, shard_size=1)
    assert found == [f"shard_size: 2 source(s) of up to {half} items in shards of 1 make up to {2 * half} shards, "
                     f"more than {MAX_SHARDS}: raise shard_size"], found


def test_a_config_with_a_negative_learning_rate_is_refused(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    shutil.copytree(config_dir(), configs)
    muq = yaml.safe_load((configs / "muq.yaml").read_text())
    muq["profiles"]["demo"]["train"]["stage1"]["lr"] = -1e-4
    (configs / "muq.yaml").write_text(yaml.safe_dump(muq))
    monkeypatch.setenv(CONFIG_DIR_ENV, str(configs))
    found = problems()
    assert found == ["profile 'demo', family muq: train.stage1.lr: Input should be greater than 0"], found


@pytest.mark.parametrize("launcher,nodes,options", [
    ("local", 1, {}),
    ("trainjob", 2, {"requests": {"cpu": "8"}, "shm_size": "16Gi", "cleanup": "never"}),
    ("pytorchjob", 2, {"shm_size": "16Gi"}),
])
def test_each_launcher_with_its_options_passes(launcher, nodes, options):
    assert problems(train_launcher=launcher, train_nodes=nodes, gpus_per_node=1, train_options=options) == []


def test_launch_settings_are_checked_as_the_train_task_builds_them():
    # The local launcher runs one node; a cluster field's value is checked by its config class.
    assert "the local launcher runs one node" in " ".join(problems(train_nodes=2))
    found = problems(train_launcher="trainjob", train_options={"cleanup": "sometimes"})
    assert len(found) == 1 and found[0].startswith("train_options for the trainjob launcher: cleanup:"), found
