"""Logging and progress bars that read well both in a terminal and in a KFP pod log."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

# Set by `musictext run --local` for its task subprocesses, whose output it reads from a pipe:
# each bar then becomes a few parseable lines (see progress_events) that the runner turns into a
# live status line instead of copying bar redraws into the terminal.
PROGRESS_EVENTS_ENV = "MUSICTEXT_PROGRESS_EVENTS"
PROGRESS_EVENT_PREFIX = "@@musictext-progress "
PROGRESS_EVENT_INTERVAL_S = 1.0


def setup_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("MUSICTEXT_LOG", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=False,
    )


def progress(items: Iterable[T], desc: str, total: int | None = None, **kw) -> Iterable[T]:
    """A tqdm bar; in non-TTY logs it prints every ~10 s instead of redrawing."""
    disabled = os.environ.get("MUSICTEXT_PROGRESS", "1") == "0"
    if os.environ.get(PROGRESS_EVENTS_ENV) == "1" and not disabled:
        return progress_events(items, desc, total)
    interactive = sys.stderr.isatty()
    return tqdm(
        items,
        desc=desc,
        total=total,
        mininterval=0.5 if interactive else 10.0,
        disable=disabled,
        dynamic_ncols=True,
        **kw,
    )


def progress_events(
    items: Iterable[T], desc: str, total: int | None = None, interval_s: float = PROGRESS_EVENT_INTERVAL_S
) -> Iterator[T]:
    """Yield ``items``, writing a progress event line to stderr at the start, at most every
    ``interval_s`` and at the end (also when the loop stops early)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    started = last = time.monotonic()
    n = 0
    _emit_progress(desc, n, total, 0.0)
    try:
        for item in items:
            yield item
            n += 1
            now = time.monotonic()
            if now - last >= interval_s:
                last = now
                _emit_progress(desc, n, total, now - started)
    finally:
        _emit_progress(desc, n, total, time.monotonic() - started, done=True)


def _emit_progress(desc: str, n: int, total: int | None, elapsed: float, done: bool = False) -> None:
    event = {"desc": desc, "n": n, "total": total, "elapsed": round(elapsed, 2), "done": done}
    sys.stderr.write(PROGRESS_EVENT_PREFIX + json.dumps(event) + "\n")
    sys.stderr.flush()


def parse_progress_event(line: str) -> dict[str, Any] | None:
    """The event a progress_events line carries (anywhere in ``line``: a runner may indent it)."""
    _, marker, payload = line.partition(PROGRESS_EVENT_PREFIX)
    if not marker:
        return None
    try:
        event = json.loads(payload)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "desc" in event and "n" in event else None


def format_progress(event: dict[str, Any]) -> str:
    """'epoch 2 40% 4/10' (or 'epoch 2 4' when the total is unknown)."""
    n, total = event["n"], event.get("total")
    if total:
        return f"{event['desc']} {100 * n // total}% {n}/{total}"
    return f"{event['desc']} {n}"
