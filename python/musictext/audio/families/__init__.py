"""The model families: one module each in this package, found by importing them all.

A family module (``muq.py``, ``mert.py``, ``music2latent.py``) exports ``FAMILY =
FamilySpec(...)``: its audio config class (with the target-dimension formula), adapter,
checkpoint loader and random-init stand-in. Adding a family is such a module plus
``configs/<name>.yaml``; every list of family names derives from ``FAMILY_NAMES``. ``base`` and
modules whose name starts with "_" are shared helpers, not families.

``$MUSICTEXT_FAMILY_DIRS`` (directories, separated by os.pathsep) adds family modules that live
outside this package, e.g. mounted next to their YAML in ``$MUSICTEXT_CONFIG_DIR``; they import
as ``musictext.audio.families.<module>`` like the built-in ones.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from types import ModuleType

from musictext.audio.families.base import AudioConfigBase, FamilySpec

FAMILY_DIRS_ENV = "MUSICTEXT_FAMILY_DIRS"
SHARED_MODULES = frozenset({"base"})


def extra_family_dirs() -> list[str]:
    """The directories named by $MUSICTEXT_FAMILY_DIRS (each must exist)."""
    dirs = [d for d in os.environ.get(FAMILY_DIRS_ENV, "").split(os.pathsep) if d]
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        raise FileNotFoundError(f"${FAMILY_DIRS_ENV} names directories that do not exist: {missing}")
    return dirs


def discover(package: ModuleType) -> dict[str, FamilySpec]:
    """Import every family module on ``package.__path__`` -> {family name: spec}, by name."""
    specs: dict[str, FamilySpec] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in SHARED_MODULES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        add_family(specs, family_spec_of(module))
    return dict(sorted(specs.items()))


def family_spec_of(module: ModuleType) -> FamilySpec:
    spec = getattr(module, "FAMILY", None)
    if not isinstance(spec, FamilySpec):
        raise TypeError(
            f"{module.__name__} is in the family package, so it must define FAMILY = FamilySpec(...) "
            f"(shared helpers go in base.py or a module named _*)"
        )
    return spec


def add_family(specs: dict[str, FamilySpec], spec: FamilySpec) -> None:
    """Add ``spec``; names, audio kinds and export names each identify one family."""
    for other in specs.values():
        for what in ("name", "kind", "export_name"):
            if getattr(other, what) == getattr(spec, what):
                raise ValueError(
                    f"families {other.name!r} and {spec.name!r} share the {what} {getattr(spec, what)!r}"
                )
    specs[spec.name] = spec


__path__ = [*__path__, *extra_family_dirs()]
REGISTRY: dict[str, FamilySpec] = discover(sys.modules[__name__])
# The single source of truth for family names (config.FAMILIES is this tuple).
FAMILY_NAMES: tuple[str, ...] = tuple(REGISTRY)
_BY_KIND: dict[str, FamilySpec] = {spec.kind: spec for spec in REGISTRY.values()}


def family(name: str) -> FamilySpec:
    """The family registered under ``name`` (e.g. "muq")."""
    if name not in REGISTRY:
        raise ValueError(f"unknown family {name!r}; expected one of {FAMILY_NAMES}")
    return REGISTRY[name]


def family_for_kind(kind: str) -> FamilySpec:
    """The family whose audio config has ``kind`` (e.g. "muq_mulan")."""
    if kind not in _BY_KIND:
        raise ValueError(f"unknown audio kind {kind!r}; expected one of {tuple(_BY_KIND)}")
    return _BY_KIND[kind]


def audio_config_classes() -> tuple[type[AudioConfigBase], ...]:
    """Every family's audio config class, in family-name order (the config's union members)."""
    return tuple(spec.config for spec in REGISTRY.values())
