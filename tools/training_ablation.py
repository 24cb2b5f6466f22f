#!/usr/bin/env python3
"""The training ablation: which recipe learns most from the same data (docs/training-ablation.md).

    python tools/training_ablation.py --run runs/<id> [--seeds 0,1,2] [--workers 2]

``--run`` is a finished local run (``musictext run --local --corpus-size 1200 ...``): its
prepared text and gathered targets per family are reused, so every variant trains and is tested
on exactly the same clips. Each (family, variant, seed) trains through ``python -m
musictext.train`` (stage 1; stage-2 variants continue from the baseline's stage 1 of the same
seed) and is evaluated on the test split like the pipeline's evaluate step. Results are cached
per job under ``--work`` (a re-run only runs what is missing). Then the best option of every
axis (by mean text->audio R@10 / chance) is combined into a "chosen" recipe per family, trained
with the same seeds, and everything is written to the Markdown report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from musictext.config import deep_merge

ROOT = Path(__file__).resolve().parents[1]

# Each axis: its options as stage-1 config overrides; the first option is the current recipe.
AXES: dict[str, dict[str, dict]] = {
    "negatives": {
        "in-batch": {},
        "catalogue": {"train": {"stage1": {"negatives": "catalogue"}}},
    },
    "targets": {
        "raw": {},
        "standardised": {"text": {"target_space": "standardise"}},
        "whitened-128": {"text": {"target_space": "whiten", "space_dim": 128}},
    },
    "temperature": {
        "learnable": {},
        "fixed": {"train": {"stage1": {"learn_temperature": False}}},
    },
}
# MERT's head: the full per-block linear head vs predicting PCA coefficients vs a low-rank head
# (sizes scaled to the demo's 960-D MERT space, as 512/2048/8192 are to 76,800-D).
MERT_HEADS: dict[str, dict] = {
    "full": {},
    "pca-64": {"text": {"target_space": "pca", "space_dim": 64}},
    "pca-256": {"text": {"target_space": "pca", "space_dim": 256}},
    "lowrank-64": {"text": {"head": "lowrank", "head_rank": 64}},
}
MSE_WEIGHTS = (0.0, 1.0)  # stage 2; 1.0 is the current recipe
# Shorter schedules than the demo's (6 + 3 epochs) so 3 seeds of every variant fit in about an
# hour on 2 cores; every variant, the baseline included, gets the same schedule.
SCHEDULE = {"train": {"keep_checkpoints": 1, "stage1": {"epochs": 3, "batch_size": 32},
                      "stage2": {"epochs": 1, "batch_size": 32}}}


def find_inputs(run_dir: Path) -> dict[str, dict[str, str]]:
    """{family: {"text": dir, "targets": dir}} from a local run's pipeline tree."""
    found = {}
    for meta in run_dir.glob("pipeline/*/*/gather-targets/targets/meta.json"):
        family = json.loads(meta.read_text())["family"]
        text = meta.parents[2] / "prepare-text" / "text"
        if (text / "text.parquet").exists():
            found[family] = {"text": str(text), "targets": str(meta.parent)}
    if not found:
        raise SystemExit(f"{run_dir}: no gather-targets/prepare-text outputs (is it a finished local run?)")
    return found


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MUSICTEXT_PROGRESS="0",
                HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def train(family: str, inputs: dict, out: Path, stage: int, overrides: dict, init: Path | None = None) -> dict:
    state = out / "train_state.json"
    if state.exists():
        return json.loads(state.read_text())
    cmd = [sys.executable, "-m", "musictext.train", "--family", family, "--profile", "demo",
           "--overrides-json", json.dumps(overrides), "--stage", str(stage), "--text-dir", inputs["text"],
           "--targets-dir", inputs["targets"], "--out-dir", str(out), "--resume"]
    if init:
        cmd += ["--init-dir", str(init)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"training failed: {' '.join(cmd[:12])} ... (see {out / 'train.log'})")
    return json.loads(state.read_text())


EVALUATE = """
import json, sys
from musictext.evaluate.core import block_diagnostics
from musictext.evaluate.retrieval import split_eval_set
from musictext.metrics import positive_pairs, retrieval_both_ways
from musictext.pairs import load_split
from musictext.text_encoder import TextEmbedder

model = TextEmbedder.from_pretrained(sys.argv[1])
data = split_eval_set(load_split(sys.argv[2], sys.argv[3], "test", model.max_length), None, None, model.embed_texts)
summary, _ = retrieval_both_ways(data.text, data.text_track, data.audio, data.audio_track, k=10)
pq, pa = positive_pairs(data.text_track, data.audio_track)
out = {f"text_to_audio/{k}": v for k, v in summary["text_to_audio"].items()}
out |= {f"chance/{k}": v for k, v in summary["chance_text_to_audio"].items()}
out |= {f"block_cosine/{b}": d["cosine"] for b, d in block_diagnostics(data.text[pq], data.audio[pa]).items()}
print(json.dumps(out))
"""


def evaluate(inputs: dict, out_dir: Path) -> dict:
    """The evaluate step's text->audio retrieval and per-block cosine on the test split (the same
    library functions, without its plots)."""
    result = out_dir / "eval.json"
    if result.exists():
        return json.loads(result.read_text())
    done = subprocess.run([sys.executable, "-c", EVALUATE, str(out_dir / "model"), inputs["text"], inputs["targets"]],
                          cwd=ROOT, env=env(), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"evaluation of {out_dir} failed: {done.stderr[-2000:]}")
    headline = json.loads(done.stdout.strip().splitlines()[-1])
    result.write_text(json.dumps(headline))
    return headline


def job(work: Path, family: str, inputs: dict, variant: str, seed: int, overrides: dict,
        stage2_weight: float | None = None) -> dict:
    """Train (stage 1, or stage 2 from the baseline's stage 1) and evaluate one variant and seed."""
    started = time.perf_counter()
    base = deep_merge(SCHEDULE, {"train": {"seed": seed}})
    if stage2_weight is None:
        out = work / family / variant / f"seed{seed}"
        state = train(family, inputs, out, 1, deep_merge(base, overrides))
    else:
        stage1 = work / family / "baseline" / f"seed{seed}"
        out = work / family / f"stage2-mse-{stage2_weight:g}" / f"seed{seed}"
        state = train(family, inputs, out, 2, deep_merge(base, {"train": {"stage2": {"mse_weight": stage2_weight}}}),
                      init=stage1)
    metrics = evaluate(inputs, out)
    for scratch in ("checkpoints", "cache"):  # hundreds of MB per job; the model/ dir stays
        shutil.rmtree(out / scratch, ignore_errors=True)
    return {"family": family, "variant": variant, "seed": seed, "metrics": metrics,
            "params": state.get("params_trainable"), "seconds_per_step": state.get("seconds_per_step"),
            "job_seconds": time.perf_counter() - started}


def score(metrics: dict) -> float:
    return metrics["text_to_audio/R@10"] / metrics["chance/R@10"]


def summarise(rows: list[dict]) -> dict:
    scores = [score(r["metrics"]) for r in rows]
    mrr = [r["metrics"]["text_to_audio/MRR"] for r in rows]
    blocks = {b: statistics.mean(r["metrics"].get(f"block_cosine/{b}", float("nan")) for r in rows)
              for b in ("mean", "robust", "dmean")}
    return {"r10_over_chance": statistics.mean(scores), "r10_over_chance_sd": statistics.pstdev(scores),
            "mrr": statistics.mean(mrr), "blocks": blocks, "params": rows[0]["params"],
            "seconds_per_step": statistics.mean(r["seconds_per_step"] or float("nan") for r in rows),
            "seeds": len(rows)}


def finished(j: tuple) -> bool:
    """Whether job ``j`` (job()'s arguments) has its evaluation on disk."""
    work, family, _inputs, variant, seed = j[:5]
    name = variant if len(j) < 7 else f"stage2-mse-{j[6]:g}"
    return (work / family / name / f"seed{seed}" / "eval.json").exists()


def run_all(jobs: list[tuple], workers: int, report_only: bool = False) -> list[dict]:
    if report_only:
        jobs = [j for j in jobs if finished(j)]
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(job, *j) for j in jobs]
        out = []
        for n, f in enumerate(futures, 1):
            out.append(f.result())
            r = out[-1]
            print(f"[{n}/{len(jobs)}] {r['family']} {r['variant']} seed {r['seed']}: "
                  f"R@10/chance {score(r['metrics']):.2f} ({r['job_seconds']:.0f}s)", flush=True)
        return out


def variant_overrides(family: str) -> dict[str, dict]:
    """Every stage-1 variant of ``family``: baseline, each non-baseline axis option, MERT heads."""
    variants = {"baseline": {}}
    for axis, options in AXES.items():
        for name, over in list(options.items())[1:]:
            variants[f"{axis}={name}"] = over
    if family == "mert":
        for name, over in list(MERT_HEADS.items())[1:]:
            variants[f"head={name}"] = over
    return variants


def choose(family: str, summary: dict[str, dict]) -> tuple[str, dict]:
    """The stage-1 variant (the baseline or one change) with the best mean R@10/chance, and its
    overrides. A single change, so the chosen default is backed by its own runs; combining the
    winners of several axes would need runs of the combination (``--combine``)."""
    variants = variant_overrides(family)
    best = max((v for v in variants if v in summary), key=lambda v: summary[v]["r10_over_chance"])
    return best, variants[best]


def combine(family: str, summary: dict[str, dict]) -> dict:
    """The best option of every axis, combined (trained anew with --combine)."""
    chosen: dict = {}
    for axis, options in (AXES | ({"head": MERT_HEADS} if family == "mert" else {})).items():
        names = [n for n in list(options)[1:] if f"{axis}={n}" in summary]
        best = max(names, key=lambda n: summary[f"{axis}={n}"]["r10_over_chance"], default=None)
        if best and summary[f"{axis}={best}"]["r10_over_chance"] > summary["baseline"]["r10_over_chance"]:
            chosen = deep_merge(chosen, options[best])
    return chosen


def table(summary: dict[str, dict]) -> list[str]:
    lines = ["| variant | R@10 / chance (sd) | MRR | cos mean · robust · dmean | trainable params | s/step |",
             "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        b = s["blocks"]
        label = name if s["seeds"] == 3 else f"{name} ({s['seeds']} seeds)"
        lines.append(f"| {label} | {s['r10_over_chance']:.2f} ({s['r10_over_chance_sd']:.2f}) | {s['mrr']:.3f} | "
                     f"{b['mean']:.3f} · {b['robust']:.3f} · {b['dmean']:.3f} | {s['params']:,} | "
                     f"{s['seconds_per_step']:.3f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--work", type=Path, default=ROOT / "build" / "ablation")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--families", default="muq,mert,music2latent")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "training-ablation.md")
    p.add_argument("--combine", action="store_true", help="also train the best option of every axis combined")
    p.add_argument("--report-only", action="store_true", help="report the finished jobs, train nothing")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    families = args.families.split(",")
    inputs = find_inputs(args.run)

    stage1 = [(args.work, f, inputs[f], v, s, o) for f in families for v, o in variant_overrides(f).items()
              for s in seeds]
    results = run_all(stage1, args.workers, args.report_only)
    stage2 = [(args.work, f, inputs[f], f"stage2 mse={w:g}", s, {}, w) for f in families for w in MSE_WEIGHTS
              for s in seeds]
    results += run_all(stage2, args.workers, args.report_only)
    by: dict[str, dict[str, list]] = {}
    for r in results:
        by.setdefault(r["family"], {}).setdefault(r["variant"], []).append(r)
    summaries = {f: {v: summarise(rows) for v, rows in vs.items()} for f, vs in by.items()}
    families = [f for f in families if f in summaries and "baseline" in summaries[f]]
    chosen = {f: choose(f, summaries[f]) for f in families}
    if args.combine:
        final = [(args.work, f, inputs[f], "combined", s, combine(f, summaries[f])) for f in families for s in seeds
                 if combine(f, summaries[f]) not in variant_overrides(f).values()]
        for r in run_all(final, args.workers, args.report_only):
            by[r["family"]].setdefault("combined", []).append(r)
    summaries = {f: {v: summarise(rows) for v, rows in vs.items()} for f, vs in by.items()}
    write_report(args, inputs, summaries, chosen)


def reduced_search_cost(work: Path, inputs: dict, seeds: list[int]) -> list[str]:
    """MERT in Milvus: text->audio R@10 searching the raw space vs the reduced basis the export
    ships (audio and query projected by (v - mean) @ components.T, as search/index.py does)."""
    import numpy as np
    import torch

    from musictext.metrics import metrics_from_ranks, rank_queries
    from musictext.pairs import load_split
    from musictext.target_space import TargetSpace
    from musictext.text_encoder import TextEmbedder

    data = load_split(inputs["text"], inputs["targets"], "test")
    train = load_split(inputs["text"], inputs["targets"], "train")
    captions = [c for caps in data.captions for c in caps]
    labels = np.array([i for i, caps in enumerate(data.captions) for _ in caps])
    gallery_labels = np.arange(len(data))

    def r10(queries, gallery) -> float:
        return metrics_from_ranks(rank_queries(queries, gallery, labels, gallery_labels).ranks)["R@10"]

    lines = ["| model | basis | R@10 raw space | R@10 reduced space | ratio |", "|---|---|---|---|---|"]
    for variant, k in (("head=pca-64", 64), ("head=pca-256", 256), ("baseline", 64), ("baseline", 256)):
        full, reduced = [], []
        for seed in seeds:
            if not (work / "mert" / variant / f"seed{seed}" / "eval.json").exists():
                continue
            model = TextEmbedder.from_pretrained(str(work / "mert" / variant / f"seed{seed}" / "model"))
            space = model.space if model.space.reduces else TargetSpace.fit("pca", train.targets, k)
            mean, comps = space.basis()
            with torch.no_grad():
                q = model.embed_texts(captions)
            full.append(r10(q, data.targets))
            reduced.append(r10((q - mean) @ comps.T, (data.targets - mean) @ comps.T))
        if not full:
            continue
        basis = "its own (exported)" if variant != "baseline" else f"PCA-{k} of the training targets"
        f, r = statistics.mean(full), statistics.mean(reduced)
        lines.append(f"| {variant} | {basis} | {f:.3f} | {r:.3f} | {r / f:.2f} |")
    return lines


def write_report(args, inputs: dict, summaries: dict, chosen: dict) -> None:
    runs = sum(s["seeds"] for summary in summaries.values() for s in summary.values())
    first = next(iter(inputs.values()))
    meta = json.loads((Path(first["targets"]) / "meta.json").read_text())
    lines = [
        "# Training ablation",
        "",
        f"Generated by `python tools/training_ablation.py --run RUN --seeds {args.seeds}` "
        f"({runs} training runs). Corpus: the demo profile's synthetic corpus of "
        f"{meta['n']} clips (the same prepared text and targets for every variant); text->audio "
        "retrieval on its test split, where R@10 / chance = R@10 divided by 10 / (test clips). "
        "Schedules: stage 1 3 epochs, stage 2 1 epoch (the demo's are 6 and 3), batch 32.",
        "Every variant changes one thing from the current recipe (baseline: in-batch negatives, raw "
        "targets, learnable temperature, full head) in stage 1; stage-2 rows continue from the "
        "baseline's stage 1 with a different MSE weight. The chosen default per family is the stage-1 "
        "variant with the best mean R@10 / chance.",
        "",
    ]
    for family, summary in summaries.items():
        best, over = chosen[family]
        gain = summary[best]["r10_over_chance"] / summary["baseline"]["r10_over_chance"]
        lines += [f"## {family}", "", *table(summary), "",
                  f"Chosen default: **{best}** (overrides `{json.dumps(over)}`), R@10/chance "
                  f"{summary[best]['r10_over_chance']:.2f} vs the current recipe's "
                  f"{summary['baseline']['r10_over_chance']:.2f} ({gain:.2f}x).", ""]
    if "mert" in inputs and "mert" in summaries:
        lines += ["## MERT in Milvus: searching the reduced space", "",
                  "Milvus holds at most 32,768 dimensions, so MERT's 76,800-D vectors are indexed in a "
                  "reduced basis (`reduced_basis.npz`, see search/basis.py). Text->audio R@10 on the test "
                  "split (every caption a query, mean of the seeds), ranking the raw vectors vs the "
                  "projected ones:", "",
                  *reduced_search_cost(args.work, inputs["mert"], [int(s) for s in args.seeds.split(",")]), ""]
    raw = {"summaries": summaries, "chosen": {f: {"variant": c[0], "overrides": c[1]} for f, c in chosen.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
