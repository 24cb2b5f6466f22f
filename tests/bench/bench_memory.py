"""Peak RSS of each stage, each measured alone in a fresh process on generated inputs.

    python -m tests.bench.bench_memory [--stages clip,eval,text,embed,train] [--hours 3]
                                       [--eval-items 50000] [--eval-dims muq=1536,music2latent=576,mert-basis=1024]
                                       [--captions 100000] [--tmp /tmp]

Per stage one child interpreter runs only that stage, as its component does, and reports its
own peak (/proc VmHWM: the process's high-water mark, imports included; Linux resets it at exec,
unlike ru_maxrss, which keeps the parent's peak; eval and text reset it once their generated
inputs are made, so the peak is the stage's with its inputs resident), the RSS after its imports
and whether torch was loaded:

- clip: ``renderings_for`` + ``clip_shard`` (every family, the pipeline's defaults: one 6 s clip
  per track, float WAV clips) on one generated ``--hours`` stereo 44.1 kHz track, once as 16-bit
  PCM WAV and once as FLAC, written a block at a time (3 h: ~1.9 GB of WAV);
- eval: ``evaluate_set`` (retrieval both ways, cosines, block diagnostics, report plots; no
  projections and no tagging, which need a text model) on ``--eval-items`` tracks with one clip
  and one caption each, per ``--eval-dims`` entry (family=dim; float32 vectors, as embedded);
- text: ``prepare_text`` on one clip shard of ``--captions`` captions (a clips.parquet with no
  audio: the stage reads captions only), with the shipped MiniLM tokenizer;
- embed: ``embed_shard`` with the demo profile (the random-init stand-ins, CPU) on a clip shard
  of 64 six-second clips, one child per family: the stage's own memory, not a real checkpoint's;
- train: tests/bench/bench_train_stream.py (a streamed epoch over MERT-size targets larger than
  the memory budget), run as its own child with ``--train-budget-gib``.

Prints one line per measurement and writes build/bench/memory.json. Generated data lives in a
temporary directory under --tmp, removed at the end; free space is checked first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.roles import run_role

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024**2
RATE = 44100
BLOCK_SECONDS = 60  # audio generated and written a minute at a time (bounds the maker's memory)
EMBED_CLIPS = 64


def status_mib(key: str) -> float:
    """A /proc/self/status figure (VmHWM: peak RSS since exec; VmRSS: now) in MiB."""
    return int(re.search(key + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def reset_peak() -> None:
    """VmHWM := the RSS now, so what made a stage's inputs does not count as the stage's peak."""
    Path("/proc/self/clear_refs").write_text("5")


def report(**facts) -> dict:
    """This process's memory facts with ``facts``."""
    return {"peak_rss_mib": round(status_mib("VmHWM"), 1), "torch_loaded": "torch" in sys.modules,
            "librosa_loaded": "librosa.core.audio" in sys.modules, **facts}


# ----------------------------------------------------------------------------- clip


def make_long_track(path: str, hours: float, fmt: str, subtype: str) -> dict:
    """A stereo 44.1 kHz track of ``hours``: two detuned tones under quiet noise (FLAC can still
    compress it), written BLOCK_SECONDS at a time."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    frames, block = int(hours * 3600 * RATE), BLOCK_SECONDS * RATE
    t0 = time.perf_counter()
    with sf.SoundFile(path, "w", RATE, 2, format=fmt, subtype=subtype) as out:
        for start in range(0, frames, block):
            n = min(block, frames - start)
            t = (start + np.arange(n)) / RATE
            tone = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 221.5 * t)], axis=1)
            out.write((tone + 0.01 * rng.standard_normal((n, 2))).astype(np.float32))
    return {"bytes": os.path.getsize(path), "write_s": round(time.perf_counter() - t0, 1)}


def clip_stage(raw_dir: str, out_dir: str, clip_seconds: float, max_clips: int) -> dict:
    """What the clip component runs: the families' renderings, then clip_shard."""
    from musictext.clip.cut import clip_shard, renderings_for
    from musictext.config import FAMILIES

    after_imports = status_mib("VmRSS")
    t0 = time.perf_counter()
    renderings = renderings_for(list(FAMILIES), "production")
    summary = clip_shard(raw_dir, out_dir, renderings, clip_seconds, max_clips_per_track=max_clips)
    return report(rss_after_imports_mib=round(after_imports, 1), seconds=round(time.perf_counter() - t0, 1),
                  clips=summary["clips"], rejected=summary["rejected"], renderings=renderings)


def write_manifest(raw_dir: Path, rel_path: str, track_id: str) -> None:
    row = {"track_id": track_id, "source": "bench", "split": "train", "path": rel_path,
           "captions": ["a long drone"], "tags": ["drone"], "licence": "CC0-1.0"}
    (raw_dir / "manifest.jsonl").write_text(json.dumps(row) + "\n")


def bench_clip(work: Path, hours: float) -> list[dict]:
    out = []
    for fmt, subtype, ext in (("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac")):
        raw = work / f"raw-{ext}"
        raw.mkdir()
        made = child("make-track", {"path": str(raw / f"long.{ext}"), "hours": hours, "fmt": fmt, "subtype": subtype})
        write_manifest(raw, f"long.{ext}", f"long-{ext}")
        run = child("clip", {"raw": str(raw), "out": str(work / f"clips-{ext}"), "clip_seconds": 6.0, "max_clips": 1})
        out.append({"stage": "clip", "input": f"{hours:g} h stereo 44.1 kHz 16-bit {fmt}",
                    "input_bytes": made["bytes"], **run})
        shutil.rmtree(raw)
        shutil.rmtree(work / f"clips-{ext}", ignore_errors=True)
    return out


# ----------------------------------------------------------------------------- eval


def eval_stage(n: int, dim: int) -> dict:
    """evaluate_set on n tracks (one clip, one caption each) of dim-D float32 vectors."""
    import numpy as np

    from musictext.evaluate.core import EvalOptions, EvalSet, evaluate_set

    rng = np.random.default_rng(0)
    audio = rng.standard_normal((n, dim), dtype=np.float32)
    text = rng.standard_normal((n, dim), dtype=np.float32)
    text += audio  # matched, noisily
    data = EvalSet(text=text, text_track=np.arange(n), audio=audio, track_ids=[f"t{i}" for i in range(n)],
                   captions=[f"caption {i}" for i in range(n)])
    reset_peak()  # the peak from here on: the evaluation, with its inputs resident
    before = status_mib("VmRSS")
    t0 = time.perf_counter()
    metrics, _ = evaluate_set(data, None, EvalOptions(projections=()))
    return report(rss_with_inputs_mib=round(before, 1), input_mib=round(2 * n * dim * 4 / MIB, 1),
                  seconds=round(time.perf_counter() - t0, 1), r_at_1=metrics["text_to_audio"]["R@1"])


# ----------------------------------------------------------------------------- text


TEXT_SHARD_CLIPS = 1000  # clips per shard: a shard of 100 tracks cut into 10 clips each


def text_stage(work: str, n: int) -> dict:
    """prepare_text on n captions (one per clip) in shards of TEXT_SHARD_CLIPS clips, as the
    pipeline hands it a corpus: the stage holds one shard and one batch of rows at a time."""
    import pyarrow as pa

    from musictext import layout, schema, storage
    from musictext.config import TextConfig
    from musictext.text.prepare import prepare_text

    words = ["warm", "bright", "slow", "fast", "piano", "guitar", "drums", "strings", "vocal", "ambient"]
    shards = []
    for first in range(0, n, TEXT_SHARD_CLIPS):
        ids = range(first, min(n, first + TEXT_SHARD_CLIPS))
        rows = {"clip_id": [f"t{i}#0" for i in ids], "track_id": [f"t{i}" for i in ids],
                "source": ["bench"] * len(ids), "split": ["train"] * len(ids), "audio": [[] for _ in ids],
                "start_s": [0.0] * len(ids), "end_s": [6.0] * len(ids),
                "captions": [[f"A {words[i % 10]} {words[(i // 10) % 10]} piece with {words[(i // 100) % 10]} "
                              f"and {words[(i // 1000) % 10]} number {i}"] for i in ids],
                "tags": [[words[i % 10]] for i in ids], "licence": ["CC0-1.0"] * len(ids), "phase": [1] * len(ids)}
        shard = Path(work) / f"clips-text-{first // TEXT_SHARD_CLIPS:05d}"
        shard.mkdir()
        storage.write_parquet(str(shard / layout.CLIPS), pa.table(rows, schema=schema.CLIP_SCHEMA))
        shards.append(str(shard))
    del rows
    reset_peak()
    before = status_mib("VmRSS")
    t0 = time.perf_counter()
    summary = prepare_text(shards, str(Path(work) / "text-out"), TextConfig())
    return report(rss_before_mib=round(before, 1), seconds=round(time.perf_counter() - t0, 1), rows=summary["rows"],
                  shards=len(shards))


# ----------------------------------------------------------------------------- embed


def make_embed_shard(work: str) -> dict:
    """A raw shard of EMBED_CLIPS 6 s stereo tracks, clipped with every family's rendering."""
    import numpy as np
    import soundfile as sf

    from musictext.clip.cut import clip_shard, renderings_for
    from musictext.config import FAMILIES

    raw = Path(work) / "raw-embed"
    (raw / "audio").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    t = np.arange(6 * RATE) / RATE
    for i in range(EMBED_CLIPS):
        f0 = 110 * 2 ** (i / 12)
        audio = 0.3 * np.stack([np.sin(2 * np.pi * f0 * t), np.sin(2 * np.pi * 1.5 * f0 * t)], axis=1)
        sf.write(raw / "audio" / f"t{i}.wav", (audio + 0.01 * rng.standard_normal(audio.shape)).astype(np.float32), RATE)
        rows.append(json.dumps({"track_id": f"t{i}", "source": "bench", "split": "train", "path": f"audio/t{i}.wav",
                                "captions": ["a tone"], "tags": [], "licence": "CC0-1.0"}))
    (raw / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    renderings = renderings_for(list(FAMILIES), "demo")
    return clip_shard(str(raw), str(Path(work) / "clips-embed"), renderings, 6.0)


def embed_stage(work: str, family: str) -> dict:
    """embed_shard of the demo profile (random-init stand-in) for one family."""
    from musictext.config import load_family_config
    from musictext.embed.targets import embed_shard

    cfg = load_family_config(family, "demo")
    after_imports = status_mib("VmRSS")
    t0 = time.perf_counter()
    summary = embed_shard(str(Path(work) / "clips-embed"), str(Path(work) / "targets-embed"), [family], "demo")
    return report(rss_after_imports_mib=round(after_imports, 1), seconds=round(time.perf_counter() - t0, 1),
                  targets=summary[f"{family}_targets"], batch_windows=cfg.audio.batch_windows,
                  target_dim=cfg.audio.target_dim)


# ----------------------------------------------------------------------------- driver

ROLES = {
    "make-track": lambda p: make_long_track(p["path"], p["hours"], p["fmt"], p["subtype"]),
    "clip": lambda p: clip_stage(p["raw"], p["out"], p["clip_seconds"], p["max_clips"]),
    "eval": lambda p: eval_stage(p["n"], p["dim"]),
    "text": lambda p: text_stage(p["work"], p["n"]),
    "make-embed": lambda p: make_embed_shard(p["work"]),
    "embed": lambda p: embed_stage(p["work"], p["family"]),
}


def child(role: str, payload: dict) -> dict:
    """Run ``role`` in a fresh interpreter; its result."""
    return run_role("tests.bench.bench_memory", role, payload, HF_HUB_OFFLINE="1")


def bench_train(budget_gib: float) -> dict:
    """The training stream's own bench, in its own process tree; its JSON result."""
    result = ROOT / "build" / "bench" / "train_stream.json"
    subprocess.run([sys.executable, "-m", "tests.bench.bench_train_stream", "--budget-gib", str(budget_gib)],
                   cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "python")})
    r = json.loads(result.read_text())
    return {"stage": "train", "input": f"{r['clips']} clips x {r['dim']} {r['dtype']}, budget {budget_gib:g} GiB",
            "peak_rss_mib": round(r["ru_maxrss_bytes"] / MIB, 1), "samples_per_s": r["samples_per_s"],
            "dataset_mib": round(r["dataset_bytes"] / MIB, 1)}


def line(r: dict) -> str:
    extra = ", torch loaded" if r.get("torch_loaded") else ""
    return f"{r['stage']}: {r['input']}: peak RSS {r['peak_rss_mib']:.0f} MiB{extra}"


def run_stages(args, work: Path) -> list[dict]:
    results: list[dict] = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    def done(rs):  # printed and saved as each arrives: a long run keeps what it measured
        for r in rs:
            results.append(r)
            print(line(r), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    stages = args.stages.split(",")
    if "clip" in stages:
        done(bench_clip(work, args.hours))
    if "eval" in stages:
        for entry in args.eval_dims.split(","):
            family, dim = entry.split("=")
            r = child("eval", {"n": args.eval_items, "dim": int(dim)})
            done([{"stage": "eval", "input": f"{args.eval_items:,} items x {dim}-D ({family})", **r}])
    if "text" in stages:
        r = child("text", {"work": str(work), "n": args.captions})
        done([{"stage": "text", "input": f"{args.captions:,} captions", **r}])
    if "embed" in stages:
        child("make-embed", {"work": str(work)})
        for family in ("muq", "mert", "music2latent"):
            r = child("embed", {"work": str(work), "family": family})
            done([{"stage": "embed", "input": f"{EMBED_CLIPS} clips of 6 s, {family} demo stand-in", **r}])
    if "train" in stages:
        done([bench_train(args.train_budget_gib)])
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="clip,eval,text,embed,train")
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--eval-items", type=int, default=50_000)
    ap.add_argument("--eval-dims", default="muq=1536,music2latent=576,mert-basis=1024")
    ap.add_argument("--captions", type=int, default=100_000)
    ap.add_argument("--train-budget-gib", type=float, default=0.5)
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "memory.json"))
    ap.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    ap.add_argument("--payload", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role:
        print(json.dumps(ROLES[args.role](json.loads(args.payload))))
        return 0

    need = int(args.hours * 3600 * RATE * 2 * 2) + 2 * 1024**3  # the 16-bit WAV (the larger file) + room
    free = shutil.disk_usage(args.tmp).free
    if "clip" in args.stages and free < need:
        raise SystemExit(f"{args.tmp} has {free / 1024**3:.1f} GiB free; the clip bench needs {need / 1024**3:.1f} GiB")
    work = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=args.tmp))
    try:
        run_stages(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
