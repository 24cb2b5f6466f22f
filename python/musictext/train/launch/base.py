"""The launch contract: what to run (TrainJobSpec), how to run it (one LaunchConfig per backend),
and the lookup from a launcher name to its backend."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from musictext import storage
from musictext.config import FamilyConfig, deep_merge, load_family_config
from musictext.layout import STATE_FILE

# The training program every backend starts under torchrun.
PROGRAM = "musictext.train"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainJobSpec(_Frozen):
    """What to train: the family config, the stage, and where its data lives.

    The config is either resolved (``config``: it travels whole, so the training processes need
    no config files to agree) or a ``family`` name with ``profile`` and ``overrides`` that the
    training processes resolve from their own packaged configs.
    """

    config: FamilyConfig | None = None
    family: str | None = None  # checked when resolved (load_family_config)
    profile: str = "production"
    overrides: dict[str, Any] = Field(default_factory=dict)
    stage: Literal[1, 2]
    text_dir: str
    targets_dir: str
    out_dir: str
    init_dir: str | None = None  # stage 2: the stage 1 out dir to start from
    log_dir: str | None = None  # TensorBoard
    # Continue from the newest checkpoint in out_dir when there is one: a retried task (or a
    # restarted job) picks up where the killed attempt stopped instead of starting over.
    resume: bool = True
    memory_budget_gib: float | None = Field(None, gt=0)  # None: the config's train.memory_budget_gib
    max_steps: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_config_source(self) -> TrainJobSpec:
        if (self.config is None) == (self.family is None):
            raise ValueError("give exactly one of config (a FamilyConfig) or family (a name)")
        if self.config is not None and self.overrides:
            raise ValueError("overrides apply to a family name; apply them to config instead")
        # Resolve once here, so a bad profile, override or loss name fails in the launcher
        # rather than in every training process.
        self.family_config()
        return self

    def family_config(self) -> FamilyConfig:
        if self.config is not None:
            return self.config
        return load_family_config(self.family, self.profile, self.overrides)

    @property
    def family_name(self) -> str:
        return self.config.family if self.config is not None else self.family

    def program_args(self) -> list[str]:
        """Arguments of the training program, after ``torchrun [flags] -m musictext.train``."""
        if self.config is not None:
            args = ["--config-json", self.config.model_dump_json()]
        else:
            args = ["--family", self.family, "--profile", self.profile]
            if self.overrides:
                args += ["--overrides-json", json.dumps(self.overrides)]
        args += ["--stage", str(self.stage), "--text-dir", self.text_dir,
                 "--targets-dir", self.targets_dir, "--out-dir", self.out_dir]
        if self.init_dir:
            args += ["--init-dir", self.init_dir]
        if self.log_dir:
            args += ["--log-dir", self.log_dir]
        if self.resume:
            args.append("--resume")
        if self.memory_budget_gib:
            args += ["--memory-budget", str(self.memory_budget_gib)]
        if self.max_steps:
            args += ["--max-steps", str(self.max_steps)]
        return args


class LaunchConfig(_Frozen):
    """How to run a TrainJobSpec: one subclass per backend, named by ``launcher``."""

    launcher: ClassVar[str]
    # Whether the training processes see the launcher's filesystem; if not, they get bucket URIs.
    shares_filesystem: ClassVar[bool] = True

    nnodes: int = Field(1, ge=1)
    nproc_per_node: int = Field(1, ge=1)


class Backend(ABC):
    """Runs a TrainJobSpec to completion under one kind of LaunchConfig."""

    config_class: ClassVar[type[LaunchConfig]]

    def __init__(self, config: LaunchConfig):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} runs a {self.config_class.__name__}, not {type(config).__name__}")
        self.config = config

    def launch(self, job: TrainJobSpec) -> dict:
        """Train ``job``; return the train_state.json it wrote. Raises if training fails."""
        self.run(job)
        return storage.read_json(storage.join(job.out_dir, STATE_FILE))

    @abstractmethod
    def run(self, job: TrainJobSpec) -> None:
        """Start the training processes and wait for them; raise on failure or timeout."""


_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(backend: type[Backend]) -> type[Backend]:
    """Class decorator: ``backend`` runs configs of its config class's launcher name."""
    _BACKENDS[backend.config_class.launcher] = backend
    return backend


def launchers() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(launcher: str) -> type[Backend]:
    try:
        return _BACKENDS[launcher]
    except KeyError:
        raise ValueError(f"unknown launcher {launcher!r} (known: {', '.join(launchers())})") from None


def config_class(launcher: str) -> type[LaunchConfig]:
    return backend_class(launcher).config_class


def launch_config(launcher: str, **params: Any) -> LaunchConfig:
    """The config of ``launcher`` from parameters shared by every backend (a pipeline's knobs).

    Each backend takes the parameters it has fields for (a local run has no image or node
    selector), and None means "that backend's default". A name no backend has is a TypeError,
    so a misspelt parameter is not dropped silently.
    """
    cls = config_class(launcher)
    known = set().union(*(b.config_class.model_fields for b in _BACKENDS.values()))
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(f"no launcher takes {unknown}")
    return cls.model_validate({k: v for k, v in params.items() if k in cls.model_fields and v is not None})


def pipeline_launch_config(
    launcher: str,
    *,
    nnodes: int | None,
    nproc_per_node: int | None,
    gpus_per_node: int | None,
    node_selector: dict | None,
    image: str | None,
    timeout_minutes: int | None,
    extras: dict[str, Any] | None = None,
    train_options: dict | None = None,
) -> LaunchConfig:
    """The launch config a pipeline's train task runs: its knobs (None, and a timeout of 0
    minutes, keep the backend's default), replaced by ``extras`` (the task's own fields, e.g.
    its node selector from KFP), then ``train_options`` (any launch-config field, nested) on
    top. The train task and the run-parameter check both build it here, so the check accepts
    exactly what the task will."""
    knobs = {"nnodes": nnodes, "nproc_per_node": nproc_per_node, "gpus_per_node": gpus_per_node,
             "node_selector": node_selector, "image": image,
             "timeout_s": timeout_minutes * 60 if timeout_minutes else None, **(extras or {})}
    return launch_config(launcher, **deep_merge(knobs, train_options or {}))


def backend_for(config: LaunchConfig, **options: Any) -> Backend:
    """The backend of ``config``'s launcher; ``options`` are its non-config dependencies."""
    return backend_class(config.launcher)(config, **options)


def launch(job: TrainJobSpec, config: LaunchConfig, **options: Any) -> dict:
    """Train ``job`` with the backend ``config`` names; return its train_state.json."""
    return backend_for(config, **options).launch(job)
