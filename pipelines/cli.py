"""The `musictext` command: run the pipeline locally, or compile it for a Kubeflow cluster."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from musictext.config import FAMILIES
from musictext.logs import setup_logging

log = logging.getLogger("musictext")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _families(value: str) -> list[str]:
    families = _csv(value)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise argparse.ArgumentTypeError(f"unknown families {unknown}; choose from {FAMILIES}")
    return families


def _key_value(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, val


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """The pipeline parameters a user changes; unset ones keep the pipeline's defaults."""
    g = p.add_argument_group("pipeline parameters")
    g.add_argument("--sources", type=_csv, help="comma-separated sources (default: synthetic)")
    g.add_argument("--corpus-size", type=int, help="clips per source (synthetic: 400)")
    g.add_argument("--shard-size", type=int, help="tracks per download/clip shard")
    g.add_argument("--clip-seconds", type=float, help="fixed clip length (s)")
    g.add_argument("--clip-format", choices=["wav", "flac"],
                   help="clip files: wav (default, fast to decode) or flac (smaller)")
    g.add_argument("--families", type=_families, help=f"subset of {','.join(FAMILIES)}")
    g.add_argument("--profile", help="config profile: demo or production")
    g.add_argument("--epochs-stage1", type=int, help="override stage-1 epochs")
    g.add_argument("--epochs-stage2", type=int, help="override stage-2 epochs")
    g.add_argument("--batch-size", type=int, help="override training batch size")
    g.add_argument("--seed", type=int)


PARAM_NAMES = {
    "sources": "sources",
    "corpus_size": "corpus_size",
    "shard_size": "shard_size",
    "clip_seconds": "clip_seconds",
    "clip_format": "clip_format",
    "families": "families",
    "profile": "profile",
    "epochs_stage1": "epochs_stage1",
    "epochs_stage2": "epochs_stage2",
    "batch_size": "batch_size",
    "seed": "seed",
}


def pipeline_params(args: argparse.Namespace) -> dict:
    return {
        param: getattr(args, attr)
        for attr, param in PARAM_NAMES.items()
        if getattr(args, attr, None) is not None
    }


def cmd_run(args: argparse.Namespace) -> int:
    if not args.local:
        log.error("only --local runs here; for a cluster use `musictext compile` + `kfp run create`")
        return 2
    from musictext.report.html import format_table
    from musictext_kfp.local import run_pipeline_locally

    started = time.monotonic()
    run_dir = run_pipeline_locally(pipeline_params(args), runs_dir=args.runs_dir, run_id=args.run_id)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # kfp.local leaves sys.stdout wrapped (it indents task logs): write to the real terminal.
    out = sys.__stdout__
    print(format_table(metrics), file=out)
    print(f"run: {run_dir}  ({time.monotonic() - started:.0f} s)", file=out)
    print(f"report: {run_dir / 'report.html'}", file=out)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from musictext_kfp.compile import compile_pipeline, validate_pipeline_yaml

    params = pipeline_params(args)
    if args.gpu_node_selector:
        params["gpu_node_selector"] = dict(args.gpu_node_selector)
    for name in ("train_nodes", "gpus_per_node", "procs_per_node", "train_launcher"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    path = compile_pipeline(args.output, args.pipeline_root, args.image, params, args.audio_image)
    summary = validate_pipeline_yaml(path)
    print(f"wrote {path}: {len(summary['executors'])} executors, parsed with the KFP protos")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="musictext", description=__doc__)
    parser.add_argument("--log-level", default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline")
    run.add_argument("--local", action="store_true", help="execute with kfp.local on this machine")
    run.add_argument("--runs-dir", default="runs")
    run.add_argument("--run-id", default=None)
    add_pipeline_args(run)
    run.set_defaults(func=cmd_run)

    comp = sub.add_parser("compile", help="write the pipeline YAML for a Kubeflow cluster")
    comp.add_argument("--output", default="build/musictext.yaml")
    comp.add_argument("--pipeline-root", help="bucket for artifacts, e.g. gs://bucket/musictext")
    comp.add_argument("--image", help="component/training image (default ghcr.io/musictext/...)")
    comp.add_argument("--audio-image", help="audio-embedding step image (transformers<5, torchaudio)")
    comp.add_argument(
        "--gpu-node-selector",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="node label(s) of the GPU pool (repeatable)",
    )
    comp.add_argument("--train-nodes", type=int)
    comp.add_argument("--gpus-per-node", type=int)
    comp.add_argument("--procs-per-node", type=int)
    comp.add_argument("--train-launcher", choices=["local", "pytorchjob"])
    add_pipeline_args(comp)
    comp.set_defaults(func=cmd_compile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
