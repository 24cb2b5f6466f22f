"""Modules imported on first use, so that a step that never calls into them never loads them.

The clip stage reads the family configs (``musictext.config``), whose modules also hold the
families' torch code; importing torch there would cost the clip stage ~190 MiB of RSS it never
uses (measured: an interpreter importing torch peaks at 218 MiB, one importing numpy at
25 MiB). ``torch = lazy_module("torch")`` keeps every ``torch.<name>`` in such a module
working, and torch loads on the first one.
"""

from __future__ import annotations

import importlib
import sys
import types


class LazyModule(types.ModuleType):
    """Stands for the module of its name: the first attribute read imports it, and every read is
    passed to it (not cached, so a test's monkeypatch of the real module is seen)."""

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self.__name__), attr)


def lazy_module(name: str) -> types.ModuleType:
    """The module ``name`` when it is already imported, else a LazyModule for it. It is never
    put in sys.modules, so libraries that test ``"torch" in sys.modules`` are not misled."""
    return sys.modules.get(name) or LazyModule(name)
