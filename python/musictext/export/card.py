"""The model card of an export: what the vectors are, what the model was trained on (sources and
their licences), how well it retrieves (with chance), what it is for, and how to serve it.

Written as ``{name}_text_embedder/README.md`` (Hugging Face model-card layout: YAML front matter,
then Markdown) and as ``{name}_MODEL_CARD.md`` beside ``{name}_best_r1.pt``.

``sources`` is {source: {"licences": {licence: clips}, "clips": n, "hours": h, "splits": {...}}},
as ``sources_from_index`` reads it from the run's clips index; a list of source names or a
{source: licence} dict is accepted too (``normalise_sources``).
"""

from __future__ import annotations

import json
import re
from collections import Counter

from musictext import layout

# Navidrome's Milvus collection of each model id (navidrome-contract.md, "Storage and search").
NAVIDROME_COLLECTIONS = {"muq": "embedding", "mert": "mert_embedding", "latent": "latent_embedding"}
# What each family's production vector is, on Navidrome's upload path (embed_music).
FAMILY_SPACES = {
    "muq": "MuQ-MuLan-large audio embeddings, 512-D per 120 s window (15 s hop) at 24 kHz",
    "mert": "MERT-v1-330M: 25 hidden states x 1024, each averaged over frames, per 30 s window (5 s hop) at 24 kHz",
    "music2latent": "Music2Latent latents of the whole file: re/im interleave of 64 channels (left/right "
    "channel of a stereo file) + 64 magnitudes",
}
# Licences of base text models we know; others: see that model's own card.
BASE_MODEL_LICENCES = {"sentence-transformers/all-MiniLM-L6-v2": "Apache-2.0"}
_NON_COMMERCIAL = re.compile(r"\bNC\b|-NC-|non-commercial|research only", re.IGNORECASE)
DIRECTIONS = (("text_to_audio", "text → audio"), ("audio_to_text", "audio → text"), ("chance", "chance"))


# -- sources --------------------------------------------------------------------------------
def sources_from_index(index_dir: str) -> dict:
    """Per source of the run's clips index: clips, hours, splits (its corpus statistics) and the
    licence strings its clips carry, with how many clips carry each."""
    index = layout.read_index(index_dir)
    clips = layout.read_clips(list(index["shards"]), columns=["source", "licence"])
    licences = Counter(zip(clips.column("source").to_pylist(), clips.column("licence").to_pylist()))
    corpus = index.get("corpus") or {}
    out: dict[str, dict] = {}
    for (source, licence), n in sorted(licences.items()):
        entry = out.setdefault(source, _corpus_entry(corpus.get(source, {})))
        entry["licences"][licence] = n
        entry["clips"] = entry.get("clips", 0) + n
    return out


def _corpus_entry(stats: dict) -> dict:
    return {"licences": {}, "hours": stats.get("hours"), "splits": dict(stats.get("splits") or {})}


def normalise_sources(sources) -> dict:
    """{source: {"licences": {licence: clips or None}, ...}} from the accepted shapes."""
    if sources is None:
        return {}
    if isinstance(sources, (list, tuple)):
        return {str(name): {"licences": {}} for name in sources}
    if not isinstance(sources, dict):
        raise TypeError(f"sources must be a list of names or a dict, got {type(sources).__name__}")
    out = {}
    for name, value in sources.items():
        if isinstance(value, str):
            out[str(name)] = {"licences": {value: None}}
        elif isinstance(value, dict):
            out[str(name)] = {**value, "licences": dict(value.get("licences") or {})}
        else:
            raise TypeError(f"sources[{name!r}]: a licence string or a dict, got {type(value).__name__}")
    return out


# -- rendering ------------------------------------------------------------------------------
def _fmt(key: str, value) -> str:
    if value is None:
        return "–"
    if re.fullmatch(r"R@\d+", key):
        return f"{100 * float(value):.1f} %"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def metrics_table(metrics: dict) -> str:
    """text→audio, audio→text and chance side by side: R@K in percent, others as they are."""
    present = [(k, label) for k, label in DIRECTIONS if isinstance(metrics.get(k), dict)]
    if not present or "text_to_audio" not in metrics:
        return "No evaluation metrics were given to this export.\n"
    keys = list(dict.fromkeys(key for k, _ in present for key in metrics[k]))
    lines = ["| metric | " + " | ".join(label for _, label in present) + " |",
             "|---|" + "---:|" * len(present)]
    lines += [f"| {key} | " + " | ".join(_fmt(key, metrics[k].get(key)) for k, _ in present) + " |" for key in keys]
    where = f"{metrics.get('n_test', '?')} held-out clips ({metrics.get('split', 'test')} split)"
    return f"Retrieval over {where}; one caption per clip as the query.\n\n" + "\n".join(lines) + "\n"


def blocks_table(metrics: dict) -> str:
    blocks = metrics.get("blocks")
    if not isinstance(blocks, dict) or not blocks:
        return ""
    lines = ["| block | cosine(predicted, target) |", "|---|---:|"]
    lines += [f"| {b} | {_fmt('', (d or {}).get('cosine'))} |" for b, d in blocks.items()]
    return "\nPer enrichment block (undefined where the target block is all zero):\n\n" + "\n".join(lines) + "\n"


def sources_table(sources: dict) -> str:
    if not sources:
        return ("The data sources were not recorded in this export (no clips index or `sources` was given); "
                "see the run's report.\n")
    lines = ["| source | clips | hours | train / valid / test | licence (clips) |", "|---|---:|---:|---|---|"]
    for name, s in sources.items():
        sp = s.get("splits") or {}
        split = f"{sp.get('train', 0)} / {sp.get('valid', 0)} / {sp.get('test', 0)}" if sp else "–"
        lic = "; ".join(f"{lic} ({n})" if n is not None else lic for lic, n in s.get("licences", {}).items()) or "unknown"
        hours = f"{s['hours']:.2f}" if s.get("hours") is not None else "–"
        lines.append(f"| {name} | {s.get('clips', '–')} | {hours} | {split} | {lic} |")
    return "\n".join(lines) + "\n"


def licence_notes(sources: dict, base_model: str) -> str:
    base_licence = BASE_MODEL_LICENCES.get(base_model, f"see the model card of `{base_model}`")
    notes = [
        "This card grants no licence of its own. The weights derive from the training data above, whose "
        "terms bind use and redistribution of the model.",
        f"Base text model `{base_model}`: {base_licence}.",
    ]
    restricted = sorted({n for n, s in sources.items() for lic in s.get("licences", {}) if _NON_COMMERCIAL.search(lic)})
    if restricted:
        notes.append(f"**Non-commercial / research-only data** ({', '.join(restricted)}): do not use this model "
                     "commercially.")
    return "\n".join(f"- {n}" for n in notes) + "\n"


def training_summary(sources: dict) -> str:
    """"N training clips (of M clips, H h, from K source(s))", from the sources' statistics."""
    clips = [s.get("clips") for s in sources.values()]
    if not sources or any(c is None for c in clips):
        return "an unrecorded number of clips"
    hours = sum(s.get("hours") or 0.0 for s in sources.values())
    corpus = f"{sum(clips)} clips, {hours:.2f} h, from {len(sources)} source(s)"
    if not all(s.get("splits") for s in sources.values()):
        return corpus
    train = sum(s["splits"].get("train", 0) for s in sources.values())
    return f"{train} training clips (of {corpus})"


def _front_matter(family: str, base_model: str) -> str:
    return "\n".join([
        "---",
        f"base_model: {json.dumps(base_model)}",  # a JSON string is a YAML string, quoted
        "pipeline_tag: feature-extraction",
        "tags:",
        "- musictext",
        "- navidrome",
        "- text-to-music-retrieval",
        f"- {family}",
        "---",
    ]) + "\n"


def head_description(text: dict) -> str:
    """The head's shape and the target space it predicts, in words."""
    space = text.get("space") or {"kind": "raw"}
    if text.get("head") == "lowrank":
        out = f"shared {text['hidden_dim']}-D trunk, a rank-{text['head_rank']} output layer"
    elif space["kind"] in ("pca", "whiten"):
        out = f"shared {text['hidden_dim']}-D trunk, one linear output"
    else:
        out = f"shared {text['hidden_dim']}-D trunk, one linear output per block"
    if space["kind"] == "raw":
        return out
    words = {"standardise": "standardised coordinates", "pca": f"{space['k']} PCA coordinates",
             "whiten": f"{space['k']} whitened PCA coordinates"}[space["kind"]]
    return f"{out}, predicting {words} of the targets that a fixed map returns to the audio space"


def render_card(*, name: str, family: str, audio: dict, text: dict, metrics: dict, sources: dict,
                onnx: dict | None = None) -> str:
    """The card's Markdown. ``audio``: model, target_dim, window_dim, sample_rate, random_init;
    ``text``: base_model, text_dim, hidden_dim, pooling, max_length, lowercase, parameters."""
    dim, block = audio["target_dim"], audio["target_dim"] // 3
    collection = NAVIDROME_COLLECTIONS.get(name, f"{name}_embedding")
    trained_on = training_summary(sources)
    demo = bool(audio.get("random_init"))
    onnx_line = (f"- `model.onnx`: the same graph for onnxruntime (opset {onnx['opset']}, {onnx['bytes'] / 1e6:.1f} MB, "
                 f"max |ONNX − PyTorch| = {onnx['max_abs_diff']:.1g} on the export's check sentences)\n") if onnx else ""
    parts = [
        _front_matter(family, text["base_model"]),
        f"# musictext `{name}` text embedder ({family})\n",
        f"Maps a text query to a **{dim}-D unit vector in Navidrome's `{name}` audio space**, so a cosine search "
        f"of Navidrome's Milvus collection `{collection}` finds tracks matching the text.\n",
        "## Audio space\n",
        f"- Family `{family}`; audio model `{audio['model']}`" + (" **(random-init demo stand-in)**" if demo else "")
        + f"; {audio.get('sample_rate', '?')} Hz.",
        f"- The vectors are what Navidrome's sidecar stores for each track on its upload path (`embed_music` of "
        f"the file): per-window {audio.get('window_dim', block)}-D features x[D, T] enriched as "
        f"[mean | IQR/1.349 | mean first difference] over T ({block}-D blocks), then one global L2 norm.",
        f"- In production: {FAMILY_SPACES.get(family, 'see the family config')}.",
        "- The model predicts all three blocks from the text and normalises the whole vector the same way.\n",
        "## Model\n",
        f"- Base text model `{text['base_model']}` ({text['text_dim']}-D, {text['pooling']} pooling, "
        f"max {text['max_length']} tokens, {'lower-cased' if text['lowercase'] else 'cased'} after caption cleaning), "
        f"then a head ({head_description(text)}); "
        f"{text['parameters'] / 1e6:.1f} M parameters.",
        "- Trained contrastively (InfoNCE), then InfoNCE + MSE to the audio targets.\n",
        "## Training data\n",
        f"Trained on {trained_on}.\n",
        sources_table(sources),
        "## Licences\n",
        licence_notes(sources, text["base_model"]),
        "## Evaluation\n",
        metrics_table(metrics) + blocks_table(metrics),
        "## Intended use\n",
        "Text-to-music search in a personal Navidrome library: Navidrome's server sends the query to "
        "`POST /embed_text` and searches the stored audio vectors by cosine. Also: retrieval research on "
        "these audio spaces.\n",
        "## Limitations\n",
        f"- Trained on {trained_on}; the figures above are on a held-out split of the same corpus "
        "(in-distribution), not on your library.",
        f"- Queries longer than {text['max_length']} tokens are truncated; captions were mostly English.",
        "- It returns a vector for any text: a query far from the training captions still gets a (meaningless) nearest "
        "track.",
    ]
    if demo:
        parts.append("- **Demo profile: the audio targets come from random-init stand-ins of the audio model, not "
                     "its real checkpoint. These vectors do not match any real Navidrome library: not for real "
                     "use.**")
    parts += [
        "",
        "## How to use\n",
        "Serve it with Navidrome's text-service contract (the directory holding "
        f"`{name}_text_embedder/`, e.g. a run's `checkpoints/`):\n",
        "```sh\nmusictext serve --models DIR            # 127.0.0.1:9003\n"
        f"curl -s localhost:9003/embed_text -H 'content-type: application/json' "
        f"-d '{{\"text\": \"slow sad piano\", \"model\": \"{name}\"}}'\n```\n",
        "In Python, with torch (`TextEmbedder`) or with onnxruntime only (`OnnxTextEmbedder`):\n",
        "```python\nfrom musictext.exports import load_export\n"
        f"vec = load_export(\"{name}_text_embedder\").embed_text(\"slow sad piano\")  # [{dim}]\n\n"
        "from musictext.export.onnx_embedder import OnnxTextEmbedder\n"
        f"vecs = OnnxTextEmbedder(\"{name}_text_embedder\").embed_texts([\"slow sad piano\"])  # [1, {dim}]\n```\n",
        "## Files\n",
        "- `config.json`, `model.safetensors`, tokenizer files: the model for `musictext` (`TextEmbedder.from_pretrained`)",
        onnx_line + f"- `{name}_best_r1.pt` (beside `{name}_text_embedder/`): the same weights in Navidrome's checkpoint layout "
        "(`config`, `text_encoder_state_dict`, `projection_state_dict`, `metrics` with `t2a_R@1` in percent)",
    ]
    return "\n".join(parts).rstrip() + "\n"
