"""One check of a run's parameters before its first expensive step (contract C5).

``check_run_params`` is called by ``musictext run --local`` before kfp starts and by the
cluster pipeline's first task, so a typo in a training knob fails in seconds instead of after
the download, clip and embedding stages. Every problem is collected and reported in one
ValueError, each naming the parameter, its value and what is expected. Only the parameters
given are checked (the fan-out dry run has no training ones); unknown names are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from musictext.clip.cut import CLIP_FORMATS
from musictext.config import FAMILIES, deep_merge, load_family_config, m2l_native_rate_override, stage_overrides
from musictext.ingest.plan import MAX_SHARDS, with_folder
from musictext.ingest.registry import check_sources
from musictext.rejects import describe_validation

__all__ = ["check_run_params"]


Count = Annotated[int, Field(ge=0)]  # 0 keeps the family config's value (epochs, batch size)
AtLeastOne = Annotated[int, Field(ge=1)]


class RunParams(BaseModel):
    """The types and ranges of the pipeline parameters (``musictext_pipeline``'s), each None
    when not given. Strict: "5" is not a number and true not a count."""

    model_config = ConfigDict(strict=True, extra="ignore")

    sources: list[str] | None = None
    source_options: dict[str, dict] | None = None
    folder: str | None = None
    corpus_size: AtLeastOne | None = None
    shard_size: AtLeastOne | None = None
    seed: Annotated[int, Field(ge=0)] | None = None
    clip_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    max_clips_per_track: AtLeastOne | None = None
    clip_format: Literal[tuple(CLIP_FORMATS)] | None = None
    m2l_native_rate: bool | None = None
    families: Annotated[list[str], Field(min_length=1)] | None = None
    profile: str | None = None
    epochs_stage1: Count | None = None
    epochs_stage2: Count | None = None
    batch_size: Count | None = None
    gpu_node_selector: dict[str, str] | None = None
    train_launcher: str | None = None
    train_nodes: AtLeastOne | None = None
    gpus_per_node: Count | None = None
    procs_per_node: AtLeastOne | None = None
    train_image: Annotated[str, Field(min_length=1)] | None = None
    train_timeout_minutes: Count | None = None  # 0: no limit
    train_options: dict | None = None


def _typed(params: dict, problems: list[str]) -> RunParams:
    """``params`` as RunParams; a parameter of the wrong type or range is a problem, and None
    (not checked further) in what is returned."""
    try:
        return RunParams.model_validate(params)
    except ValidationError as err:
        bad = set()
        for e in err.errors():
            name = str(e["loc"][0])
            bad.add(name)
            shown = repr(e.get("input"))
            problems.append(f"{name}: {e['msg']} (got {shown[:60]})")
        return RunParams.model_validate({k: v for k, v in params.items() if k not in bad})


def _reason(err: Exception) -> str:
    return describe_validation(err) if isinstance(err, ValidationError) else str(err)


def _collect(problems: list[str], what: str, check: Callable[[], Any]) -> Any:
    """``check()``, or None with its error added to ``problems`` under ``what``."""
    try:
        return check()
    except (ValueError, TypeError, KeyError) as err:  # ValidationError is a ValueError
        problems.append(f"{what}: {_reason(err)}")
        return None


def _check_sources(run: RunParams, problems: list[str]) -> None:
    """The sources and their options as the listing checks them, and the fan-out's width."""
    if run.sources is None:
        return
    options = _collect(problems, "folder", lambda: with_folder(run.source_options, run.folder or "", run.sources))
    if options is not None:
        _collect(problems, "sources/source_options", lambda: check_sources(run.sources, options))
    if run.corpus_size and run.shard_size:
        shards = len(run.sources) * math.ceil(run.corpus_size / run.shard_size)  # each source is cut on its own
        if shards > MAX_SHARDS:
            problems.append(f"shard_size: {len(run.sources)} source(s) of up to {run.corpus_size} items in shards "
                            f"of {run.shard_size} make up to {shards} shards, more than {MAX_SHARDS}: "
                            "raise shard_size")


def _check_families(run: RunParams, problems: list[str]) -> list[str]:
    families = run.families or []
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        problems.append(f"families: unknown {unknown}; known: {list(FAMILIES)}")
    repeated = sorted({f for f in families if families.count(f) > 1 and f in FAMILIES})
    if repeated:
        problems.append(f"families: listed more than once: {repeated}")
    return [f for f in dict.fromkeys(families) if f in FAMILIES]


def _check_configs(run: RunParams, given: set[str], families: list[str], problems: list[str]) -> None:
    """Each family's config with the run's profile and knobs, as the stages will load it (a
    profile given without families is checked against every family's YAML)."""
    profile = run.profile or "production"
    overrides = stage_overrides(run.epochs_stage1, run.epochs_stage2, run.batch_size)
    for family in families or (list(FAMILIES) if "profile" in given else []):
        more = deep_merge(overrides, m2l_native_rate_override(family, bool(run.m2l_native_rate)) or {})
        _collect(problems, f"profile {profile!r}, family {family}",
                 lambda family=family, more=more: load_family_config(family, profile, more))


def _check_launch(run: RunParams, problems: list[str]) -> None:
    """The train task's launch config: the pipeline's knobs, then train_options (nested fields)."""
    if run.train_launcher is None:
        return
    from musictext.train.launch import launchers, pipeline_launch_config  # the trainer's side, only when asked

    if run.train_launcher not in launchers():
        problems.append(f"train_launcher: must be one of {launchers()}, got {run.train_launcher!r}")
        return
    _collect(problems, f"train_options for the {run.train_launcher} launcher",
             lambda: pipeline_launch_config(
                 run.train_launcher, nnodes=run.train_nodes, nproc_per_node=run.procs_per_node,
                 gpus_per_node=run.gpus_per_node, node_selector=run.gpu_node_selector, image=run.train_image,
                 timeout_minutes=run.train_timeout_minutes, train_options=run.train_options))


def check_run_params(params: dict) -> None:
    """Check a run's pipeline parameters (those present in ``params``) and the family configs
    they select; ValueError listing every problem, one per line."""
    problems: list[str] = []
    run = _typed(params, problems)
    _check_sources(run, problems)
    families = _check_families(run, problems)
    _check_configs(run, set(params), families, problems)
    _check_launch(run, problems)
    if problems:
        raise ValueError(f"{len(problems)} bad run parameter(s):\n  " + "\n  ".join(problems))
