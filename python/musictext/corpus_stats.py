"""Per-source statistics of a corpus: items, hours, splits, caption lengths, rejections.

Computed from plain rows (listing records, manifest rows or clip rows: ``source``, ``split``,
``captions``, ``start_s``/``end_s`` or ``meta.duration_s``) so the listing step, ``musictext
datasets stats`` and the run report all count the same way.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np


def row_seconds(row: dict) -> float | None:
    start, end = row.get("start_s"), row.get("end_s")
    if end is not None:
        return float(end) - float(start or 0.0)
    duration = (row.get("meta") or {}).get("duration_s")
    return float(duration) if duration else None


def corpus_stats(rows: Iterable[dict], rejected: Iterable[dict] = ()) -> dict:
    """{source: {items, captions, hours, unknown_duration, splits, caption_words}} plus a total.

    ``caption_words``: min, median, p90 and max words per caption. Rejections are counted per
    source when their item id starts with the source name (``<source>-...``), else under "other".
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[str(row.get("source", "?"))].append(row)
    out: dict[str, dict] = {}
    for source, items in sorted(groups.items()):
        seconds = [row_seconds(r) for r in items]
        words = [len(str(c).split()) for r in items for c in r.get("captions") or []]
        out[source] = {
            "items": len(items),
            "captions": len(words),
            "hours": round(sum(s for s in seconds if s) / 3600, 3),
            "unknown_duration": sum(1 for s in seconds if s is None),
            "splits": dict(sorted(Counter(r.get("split", "?") for r in items).items())),
            "caption_words": _distribution(words),
            "rejected": 0,
        }
    for row in rejected:
        source = _rejected_source(str(row.get("item", "")), out)
        out.setdefault(source, {"items": 0, "captions": 0, "hours": 0.0, "unknown_duration": 0, "splits": {},
                                "caption_words": _distribution([]), "rejected": 0})
        out[source]["rejected"] += 1
    return out


def _rejected_source(item: str, known: dict) -> str:
    """The source a rejected item belongs to: ids are "<source>-<id>" ("musiccaps-public.csv:12"
    too); anything else counts as "other"."""
    known_match = next((s for s in known if item.startswith(f"{s}-")), None)
    if known_match:
        return known_match
    head, sep, _ = item.partition("-")
    return head if sep and re.fullmatch(r"[a-z][a-z0-9_]*", head) else "other"


def _distribution(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "p90": 0, "max": 0}
    arr = np.asarray(values)
    return {"min": int(arr.min()), "median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)),
            "max": int(arr.max())}


def stats_markdown(stats: dict, title: str = "Corpus") -> str:
    """A Markdown table of ``corpus_stats`` (KFP Markdown artifact, report, terminal)."""
    lines = [f"### {title}", "",
             "| source | items | hours | train / valid / test | captions | words per caption (min · median · p90 · max) | rejected |",
             "|---|---:|---:|---|---:|---|---:|"]
    totals = Counter()
    for source, s in stats.items():
        sp = s["splits"]
        w = s["caption_words"]
        hours = f"{s['hours']:.2f}" + (f" (+{s['unknown_duration']} unknown)" if s["unknown_duration"] else "")
        lines.append(f"| {source} | {s['items']} | {hours} | {sp.get('train', 0)} / {sp.get('valid', 0)} / "
                     f"{sp.get('test', 0)} | {s['captions']} | {w['min']} · {w['median']:g} · {w['p90']:g} · "
                     f"{w['max']} | {s['rejected']} |")
        totals.update(items=s["items"], captions=s["captions"], rejected=s["rejected"])
        totals["hours"] += s["hours"]
    lines.append(f"| **all** | {totals['items']} | {totals['hours']:.2f} | | {totals['captions']} | | "
                 f"{totals['rejected']} |")
    return "\n".join(lines) + "\n"
