"""Logging and progress bars that read well both in a terminal and in a KFP pod log."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def setup_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("MUSICTEXT_LOG", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=False,
    )


def progress(items: Iterable[T], desc: str, total: int | None = None, **kw) -> Iterable[T]:
    """A tqdm bar; in non-TTY logs it prints every ~10 s instead of redrawing."""
    interactive = sys.stderr.isatty()
    return tqdm(
        items,
        desc=desc,
        total=total,
        mininterval=0.5 if interactive else 10.0,
        disable=os.environ.get("MUSICTEXT_PROGRESS", "1") == "0",
        dynamic_ncols=True,
        **kw,
    )
