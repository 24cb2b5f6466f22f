"""An evaluation's metrics as Markdown (summary.md, the KFP Markdown artifact), a self-contained
HTML page (plots embedded as base64 PNG) and a short terminal table."""

from __future__ import annotations

import html

from musictext.evaluate.plots import data_uri

DIRECTIONS = (("text_to_audio", "chance", "text→audio"), ("audio_to_text", "chance_audio_to_text", "audio→text"))
COLUMNS = ("R@1", "R@5", "R@10", "MRR", "mAP@10", "median_rank")


def _num(x) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3f}"
    return str(x)


def _retrieval_cells(metrics: dict) -> list[tuple[str, list[str]]]:
    rows = []
    for key, chance_key, label in DIRECTIONS:
        got, chance = metrics.get(key) or {}, metrics.get(chance_key) or {}
        fmt = lambda c, x: f"{x:g}" if c == "median_rank" and x is not None else _num(x)
        rows.append((label, [f"{fmt(c, got.get(c))} ({fmt(c, chance.get(c))})" for c in COLUMNS]))
    return rows


def _counts_line(metrics: dict) -> str:
    tracks = metrics.get("n_tracks", metrics["n_test"])
    line = f"{tracks} tracks, {metrics.get('n_captions', metrics['n_test'])} captions"
    if metrics["n_test"] != tracks:
        line += f", {metrics['n_test']} audio vectors (clips)"
    split = metrics.get("split")
    return line + (f" ({split} split)" if split else "") + "; ties counted pessimistically; chance in brackets."


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _tagging_lines(tagging: dict) -> list[str]:
    if not tagging.get("macro"):
        return [tagging.get("note", "not evaluated")]
    macro, chance = tagging["macro"], tagging["chance"]
    prompts = ", ".join(f"\"{t}\"" for t in tagging.get("templates", []))
    lines = [f"{tagging['n_tags']} tags over {tagging['n_tracks']} tracks; prompts: {prompts}",
             (f"macro ROC-AUC {_num(macro['roc_auc'])} (chance {_num(chance['roc_auc'])}), "
              f"macro PR-AUC {_num(macro['pr_auc'])} (chance {_num(chance['pr_auc'])})")]
    for facet in ("genre", "mood"):
        acc = tagging.get(f"{facet}_accuracy")
        lines.append(f"{facet} accuracy {_num(acc['accuracy'])} (chance {_num(acc['chance'])}) over "
                     f"{acc['n_tracks']} tracks, {len(acc['tags'])} candidate tags" if acc
                     else f"{facet} accuracy: n/a (fewer than two {facet} tags among the tracks' tags)")
    if tagging.get("skipped"):
        lines.append("skipped tags: " + ", ".join(f"{s['tag']} ({s['reason']})" for s in tagging["skipped"]))
    return lines


def summary_markdown(metrics: dict, title: str) -> str:
    parts = [f"# {title}", "", _counts_line(metrics), "",
             _md_table(["direction", *COLUMNS], [[label, *cells] for label, cells in _retrieval_cells(metrics)])]
    blocks = metrics.get("blocks") or {}
    if blocks:
        parts += ["", "## Cosine between predicted and target vectors, per block", "",
                  _md_table(["block", "cosine", "rows"],
                            [[name, _num(b.get("cosine")), _num(b.get("n_defined"))] for name, b in blocks.items()])]
    cos = metrics.get("cosines")
    if cos:
        parts += ["", (f"Caption-audio cosine: positives {_num(cos['positive_mean'])}, negatives "
                       f"{_num(cos.get('negative_mean'))}, a positive above a negative "
                       f"{_num(cos.get('positive_above_negative'))} of the time.")]
    parts += ["", "## Zero-shot tagging", ""] + [f"- {line}" for line in _tagging_lines(metrics.get("tagging") or {})]
    notes = list(metrics.get("projection_notes") or []) + list(metrics.get("notes") or [])
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


def short_table(metrics: dict) -> str:
    """Fixed-width text for a terminal: both directions with chance, then tagging."""
    width = 16
    lines = [_counts_line(metrics), f"{'':12}" + "".join(f"{c:>{width}}" for c in COLUMNS)]
    for label, cells in _retrieval_cells(metrics):
        lines.append(f"{label:12}" + "".join(f"{c:>{width}}" for c in cells))
    tagging = metrics.get("tagging") or {}
    if tagging.get("macro"):
        lines.append(_tagging_lines(tagging)[1])
    return "\n".join(lines)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child{text-align:left}
.c{color:#888}img{max-width:100%;margin:.5em 0}"""


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _html_examples(examples: dict) -> str:
    out = []
    for which in ("best", "worst"):
        rows = [[e["caption"], e["track"], str(e["rank"]), ", ".join(e["top"])] for e in examples.get(which, [])]
        if rows:
            out.append(f"<h3>{which} text→audio queries</h3>"
                       + _html_table(["caption", "track", "rank", "ranked first"], rows))
    return "".join(out)


def report_html(metrics: dict, plots: dict[str, bytes], title: str) -> str:
    t = html.escape(title)
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>{t}</title><style>{STYLE}</style></head>"
              f"<body><h1>{t}</h1><p>{html.escape(_counts_line(metrics))}</p>"),
             _html_table(["direction", *COLUMNS], [[label, *cells] for label, cells in _retrieval_cells(metrics)])]
    blocks = metrics.get("blocks") or {}
    if blocks:
        parts.append("<h2>Per-block cosine (predicted vs target)</h2>" + _html_table(
            ["block", "cosine", "rows", "target energy", "predicted energy"],
            [[n, _num(b.get("cosine")), _num(b.get("n_defined")), _num(b.get("target_energy")),
              _num(b.get("pred_energy"))] for n, b in blocks.items()]))
    tagging = metrics.get("tagging") or {}
    parts.append("<h2>Zero-shot tagging</h2>" + "".join(f"<p>{html.escape(x)}</p>" for x in _tagging_lines(tagging)))
    if tagging.get("per_tag"):
        parts.append(_html_table(["tag", "ROC-AUC", "PR-AUC", "positives", "prevalence"],
                                 [[tag, _num(m["roc_auc"]), _num(m["pr_auc"]), str(m["positives"]),
                                   _num(m["prevalence"])] for tag, m in tagging["per_tag"].items()]))
    parts.append(_html_examples(metrics.get("examples") or {}))
    notes = list(metrics.get("projection_notes") or []) + list(metrics.get("notes") or [])
    parts += [f"<p class=c>{html.escape(n)}</p>" for n in notes]
    for name, data in plots.items():
        parts.append(f"<h3>{html.escape(name)}</h3><img alt=\"{html.escape(name)}\" src=\"{data_uri(data)}\">")
    parts.append("</body></html>")
    return "\n".join(parts)
