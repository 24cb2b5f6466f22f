"""The run report: one metrics.json over all families, a self-contained report.html, a table."""

from __future__ import annotations

import base64
import html
import io
import logging

from musictext import storage
from musictext.layout import METRICS_FILE, REPORT_HTML

log = logging.getLogger(__name__)

KEYS = ("R@1", "R@5", "R@10", "MRR")
# Enrichment blocks of every target, [mean | IQR/1.349 | mean Δ], then the whole vector.
BLOCKS = ("mean", "robust", "dmean", "full")

# How each clip rendering (schema.RENDERINGS) turns a clip into the file a family embeds.
RENDERING_NOTES = {
    "native": "each clip as decoded from its source file (source rate, all channels), loaded as "
              "this family's upload path loads a file",
    "mono24k": "librosa.load(sr=24000, mono=True) of each clip as decoded from its source file "
               "(channel mean, soxr_hq), computed when clipping and stored losslessly: the vectors "
               "of the native clip file",
    "stereo44k": "a 44.1 kHz stereo rendering of each clip (a mono source as L = R, other rates "
                 "resampled once with soxr_hq, more than two channels downmixed by ITU-R BS.775)",
}
M2L_NOTE = (
    "Navidrome itself stores no Music2Latent vector for mono or multi-channel (more than two) "
    "files: its upload path encodes every channel of the file at the file's own rate and takes "
    "channels 0 and 1 as the real and imaginary parts. musictext's Music2Latent targets are "
    "therefore those of a 44.1 kHz stereo file of each clip (the usual library file); with "
    "m2l_native_rate they are those of the clip at its source rate and channels, exactly as "
    "Navidrome encodes a user's file, and mono or multi-channel clips are rejected."
)


def _block_cosines(result: dict) -> dict:
    """{block: mean cosine or None}: every block present, None where it is undefined or absent."""
    blocks = result.get("blocks") or {}
    return {name: (blocks.get(name) or {}).get("cosine") for name in BLOCKS}


def _is_music2latent(entry: dict) -> bool:
    return entry.get("family") == "music2latent" or (entry.get("targets") or {}).get("kind") == "music2latent"


def summarise(results: list[dict], rejected: list[dict] | None = None) -> dict:
    families = {}
    for r in results:
        entry = {k: r["text_to_audio"][k] for k in KEYS}
        entry.update(chance=dict(r["chance"]), n_test=r["n_test"], audio_to_text=dict(r["audio_to_text"]),
                     block_cosine=_block_cosines(r), targets=dict(r.get("targets") or {}))
        families[r["family"]] = entry
    return {"families": families, "rejected_count": len(rejected or [])}


def _m2l_footnote(family: str, rendering: str | None) -> str:
    how = {"stereo44k": "a 44.1 kHz stereo file of each clip",
           "native": "each clip at its source rate and channels (m2l_native_rate)"}.get(rendering)
    what = f"{family} targets: {how}. " if how else ""
    return f"{what}Navidrome stores no Music2Latent vector for mono or >2-channel files (see report.html).\n"


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def format_table(metrics: dict) -> str:
    """Per family: R@1, R@5, R@10, MRR each with its chance value, and n_test; then the cosine
    between predicted and target vectors per enrichment block (rich, plain text)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="text→audio retrieval (chance in brackets)")
    table.add_column("family")
    for key in KEYS:
        table.add_column(key, justify="right")
    table.add_column("n_test", justify="right")
    blocks = Table(title="cosine(predicted, target) per block, test split")
    blocks.add_column("family")
    for name in BLOCKS:
        blocks.add_column(name, justify="right")
    for family, m in metrics["families"].items():
        cells = [f"{m[k]:.3f} ({m['chance'][k]:.3f})" for k in KEYS]
        table.add_row(family, *cells, str(m["n_test"]))
        cosines = m.get("block_cosine") or {}
        blocks.add_row(family, *(_fmt(cosines.get(name)) for name in BLOCKS))
    buf = io.StringIO()
    console = Console(file=buf, width=110, color_system=None, force_terminal=False)
    console.print(table)
    console.print(blocks)
    text = buf.getvalue()
    for family, m in metrics["families"].items():
        if _is_music2latent({"family": family, **m}):
            text += _m2l_footnote(family, (m.get("targets") or {}).get("clip_rendering"))
    if metrics.get("rejected_count"):
        text += f"rejected items: {metrics['rejected_count']}\n"
    return text


# -- HTML -----------------------------------------------------------------------------------
def _cell(x) -> str:
    if isinstance(x, float):
        return f"{x:.3f}"
    return html.escape("n/a" if x is None else str(x))


def _metrics_table(metrics: dict) -> str:
    head = "".join(f"<th>{k}</th><th>chance</th>" for k in KEYS)
    rows = []
    for family, m in metrics["families"].items():
        cells = "".join(f"<td>{_cell(m[k])}</td><td class=c>{_cell(m['chance'][k])}</td>" for k in KEYS)
        a2t = " / ".join(_cell(m["audio_to_text"][k]) for k in KEYS)
        rows.append(f"<tr><td>{html.escape(family)}</td>{cells}<td>{a2t}</td><td>{m['n_test']}</td></tr>")
    return (f"<table><tr><th>family</th>{head}<th>audio→text R@1/5/10/MRR</th><th>n_test</th></tr>"
            + "".join(rows) + "</table>")


def _blocks_table(result: dict) -> str:
    """Every block, also one the evaluation did not report (shown as n/a)."""
    blocks = result.get("blocks") or {}
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_cell(b.get('cosine'))}</td><td>{_cell(b.get('n_defined'))}</td>"
        f"<td>{_cell(b.get('target_energy'))}</td><td>{_cell(b.get('pred_energy'))}</td></tr>"
        for name, b in ((name, blocks.get(name) or {}) for name in BLOCKS)
    )
    return ("<p>Cosine between the predicted and target sub-vectors of each enrichment block "
            "[mean | IQR/1.349 | mean Δ] (rows: test clips where both are non-zero).</p>"
            "<table><tr><th>block</th><th>cosine</th><th>rows</th><th>target energy</th>"
            f"<th>predicted energy</th></tr>{rows}</table>")


def _targets(result: dict) -> str:
    """What the targets are: the model, and the file each clip was embedded from."""
    facts = result.get("targets") or {}
    model = facts.get("model")
    if model is not None and facts.get("random_init"):
        model = f"{model} (random-init stand-in)"
    parts = []
    if model is not None:
        parts.append(f"model {html.escape(str(model))}, {_cell(facts.get('target_dim'))}-D")
    rendering = facts.get("clip_rendering")
    if rendering is not None:
        parts.append("embedded from " + html.escape(RENDERING_NOTES.get(rendering, str(rendering))))
    text = f"<p>Targets: {'; '.join(parts)}.</p>" if parts else ""
    if _is_music2latent(result):
        text += f"<p>{html.escape(M2L_NOTE)}</p>"
    return text


def _train_states(result: dict) -> list[dict]:
    """``train`` may be one train_state, a list of them, or a {stage name: state} dict."""
    train = result.get("train")
    if isinstance(train, dict):
        return [train] if "best_epoch" in train else [v for v in train.values() if isinstance(v, dict)]
    return [s for s in train or [] if isinstance(s, dict)]


def _train_table(result: dict) -> str:
    rows = "".join(
        f"<tr><td>{_cell(s.get('stage'))}</td><td>{_cell(s.get('epochs'))}</td><td>{_cell(s.get('best_epoch'))}</td>"
        f"<td>{_cell(s.get('best_valid_r1'))}</td><td>{_cell(s.get('seconds'))}</td></tr>"
        for s in _train_states(result)
    )
    if not rows:
        return ""
    return ("<table><tr><th>stage</th><th>epochs</th><th>best epoch</th><th>best valid R@1</th>"
            f"<th>seconds</th></tr>{rows}</table>")


def _plots(result: dict) -> str:
    imgs = []
    for key, uri in (result.get("plots") or {}).items():
        if not storage.exists(uri):
            log.warning("plot %s missing; left out of the report", uri)
            continue
        data = base64.b64encode(storage.read_bytes(uri)).decode()
        imgs.append(f'<img alt="{html.escape(key)}" src="data:image/png;base64,{data}">')
    return "".join(imgs)


def _rejected(rejected: list[dict]) -> str:
    if not rejected:
        return "<p>No rejected items.</p>"
    rows = "".join(
        f"<tr><td>{_cell(r.get('stage'))}</td><td>{_cell(r.get('item'))}</td><td>{_cell(r.get('reason'))}</td></tr>"
        for r in rejected
    )
    return f"<table><tr><th>stage</th><th>item</th><th>reason</th></tr>{rows}</table>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}td:first-child{text-align:left}
.c{color:#888}img{max-width:48%;margin:.5em}"""


def _corpus_table(corpus: dict | None) -> str:
    if not corpus:
        return ""
    head = ("<tr><th>source</th><th>clips</th><th>hours</th><th>train / valid / test</th>"
            "<th>words per caption (median · p90)</th><th>rejected</th></tr>")
    rows = []
    for source, s in corpus.items():
        sp, w = s["splits"], s["caption_words"]
        rows.append(f"<tr><td>{html.escape(source)}</td><td>{s['items']}</td><td>{s['hours']:.2f}</td>"
                    f"<td>{sp.get('train', 0)} / {sp.get('valid', 0)} / {sp.get('test', 0)}</td>"
                    f"<td>{w['median']:g} · {w['p90']:g}</td><td>{s['rejected']}</td></tr>")
    return f"<h2>Data</h2><table>{head}{''.join(rows)}</table>"


def render_html(metrics: dict, results: list[dict], rejected: list[dict], corpus: dict | None = None) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>musictext report</title>"
             f"<style>{STYLE}</style></head><body><h1>musictext evaluation</h1>", _metrics_table(metrics),
             _corpus_table(corpus)]
    for r in results:
        parts += [f"<h2>{html.escape(r['family'])}</h2>", _targets(r), _train_table(r), _blocks_table(r), _plots(r)]
    parts += [f"<h2>Rejected items ({len(rejected)})</h2>", _rejected(rejected), "</body></html>"]
    return "\n".join(parts)


def write_report(results: list[dict], out_dir: str, rejected: list[dict] | None = None,
                 corpus: dict | None = None) -> dict:
    """metrics.json + self-contained report.html in ``out_dir``; returns the metrics dict."""
    rejected = list(rejected or [])
    metrics = summarise(results, rejected)
    storage.write_json(storage.join(out_dir, METRICS_FILE), metrics)
    storage.write_bytes(storage.join(out_dir, REPORT_HTML), render_html(metrics, results, rejected, corpus).encode())
    return metrics
