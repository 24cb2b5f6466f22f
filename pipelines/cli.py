"""The `musictext` command: run the pipeline (locally or compiled for a Kubeflow cluster), list and parse
the data sources, serve the exported text embedders, index and search a library, evaluate."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from musictext.clip.cut import CLIP_FORMATS
from musictext.config import FAMILIES
from musictext.logs import setup_logging

log = logging.getLogger("musictext")

# The pipeline function's signature and docstring define every parameter's option, type,
# default and help; these add the checks a KFP type cannot express.
CHOICES = {"clip_format": sorted(CLIP_FORMATS), "train_launcher": ["local", "trainjob", "pytorchjob"]}


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


VALUE_TYPES = {"families": _families}
# argparse settings per KFP parameter type (kfp's names for the annotations it accepts).
TYPE_ARGS: dict[str, dict[str, Any]] = {
    "Integer": {"type": int, "metavar": "N"},
    "Float": {"type": float, "metavar": "X"},
    "String": {"metavar": "TEXT"},
    "Boolean": {"action": argparse.BooleanOptionalAction},
    "List": {"type": _csv, "metavar": "A,B"},
    "Dict": {"type": _key_value, "action": "append", "metavar": "KEY=VALUE"},
}


def pipeline_inputs() -> dict:
    """The pipeline's parameters: name -> kfp InputSpec (type, default, description)."""
    from musictext_kfp.musictext_pipeline import musictext_pipeline

    return musictext_pipeline.component_spec.inputs or {}


def option_name(param: str) -> str:
    return "--" + param.replace("_", "-")


def argument_settings(name: str, spec) -> dict[str, Any]:
    """How argparse reads one parameter: its KFP type's settings, then its own checks."""
    if spec.type not in TYPE_ARGS:
        raise TypeError(f"pipeline parameter {name!r} has type {spec.type!r}, which the CLI cannot parse")
    settings = dict(TYPE_ARGS[spec.type])
    if name in VALUE_TYPES:
        settings["type"] = VALUE_TYPES[name]
    if name in CHOICES:
        settings.update(choices=CHOICES[name], metavar=None)
    return settings


def show_default(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def parameter_help(spec, default: Any) -> str:
    text = " ".join((spec.description or "").split())
    repeat = " Repeatable." if spec.type == "Dict" else ""
    return f"{text}{repeat} (default: {show_default(default)})".replace("%", "%%")


def add_pipeline_args(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """One option per pipeline parameter; unset ones keep the pipeline's defaults (``defaults``
    only changes what the help says they are)."""
    g = p.add_argument_group("pipeline parameters", "taken from the pipeline function")
    for name, spec in pipeline_inputs().items():
        default = (defaults or {}).get(name, spec.default)
        g.add_argument(option_name(name), dest=name, default=None, help=parameter_help(spec, default),
                       **argument_settings(name, spec))


def nested_options(pairs: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """SOURCE.OPTION=VALUE pairs as {source: {option: value}} (values checked by each source)."""
    out: dict[str, dict[str, str]] = {}
    for key, value in pairs:
        source, sep, option = key.partition(".")
        if not sep or not source or not option:
            raise SystemExit(f"--source-options: expected SOURCE.OPTION=VALUE, got {key}={value}")
        out.setdefault(source, {})[option] = value
    return out


def dotted_options(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """FIELD=VALUE pairs with dotted fields nesting (requests.cpu=8 -> {"requests": {"cpu": "8"}});
    a value starting with [ or { is JSON (tolerations=[{...}]). Values are checked by the
    launch config they end up in."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        *parents, field = key.split(".")
        if not all(parents) or not field:
            raise SystemExit(f"expected FIELD=VALUE with dotted FIELD, got {key}={value}")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SystemExit(f"{key}={value}: {part} is already set to a value, not fields")
        node[field] = json_value(key, value)
    return out


def json_value(key: str, value: str) -> Any:
    if not value.lstrip().startswith(("[", "{")):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise SystemExit(f"{key}: a value starting with [ or {{ is JSON: {err}") from None


# Dict parameters whose keys are dotted paths.
NESTED_DICTS = {"source_options": nested_options, "train_options": dotted_options}


def pipeline_params(args: argparse.Namespace, pipeline_name: str = "musictext_pipeline") -> dict:
    """The pipeline parameters given on the command line, as the pipeline takes them (only
    those ``pipeline_name`` has)."""
    from musictext_kfp import musictext_pipeline as module

    wanted = getattr(module, pipeline_name).component_spec.inputs or {}
    params = {}
    for name, spec in pipeline_inputs().items():
        value = getattr(args, name, None)
        if value is not None and name in wanted:
            if spec.type == "Dict":
                value = NESTED_DICTS[name](value) if name in NESTED_DICTS else dict(value)
            params[name] = value
    return params


def pipeline_name(args: argparse.Namespace) -> str:
    return "fanout_dry_run" if getattr(args, "dry_run", False) else "musictext_pipeline"


def cmd_run(args: argparse.Namespace) -> int:
    if not args.local:
        log.error("only --local runs here; for a cluster use `musictext compile` + `kfp run create`")
        return 2
    from musictext.report.html import format_table
    from musictext_kfp.local import PipelineFailed, RunError, run_pipeline_locally

    if args.resume and args.run_id and args.resume != args.run_id:
        log.error("--resume %s and --run-id %s name two runs; give one", args.resume, args.run_id)
        return 2
    started = time.monotonic()
    name = pipeline_name(args)
    try:
        run_dir = run_pipeline_locally(
            pipeline_params(args, name), runs_dir=args.runs_dir, run_id=args.resume or args.run_id,
            verbose=args.verbose, pipeline_name=name, resume=args.resume is not None,
        )
    except PipelineFailed as failed:
        log.error("the local run failed: %s; continue it with --resume", failed)
        return 1
    except RunError as refused:
        log.error("%s", refused)
        return 2
    if args.dry_run:
        shards = json.loads((run_dir / "dry_run.json").read_text())
        print(f"dry run: {len(shards)} shards checked, {int(sum(s['records'] for s in shards))} records "
              f"in {time.monotonic() - started:.0f} s; run: {run_dir}")
        return 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(format_table(metrics))
    print(f"run: {run_dir}  ({time.monotonic() - started:.0f} s)")
    print(f"report: {run_dir / 'report.html'}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from musictext_kfp.compile import BucketSecretError, compile_pipeline, validate_pipeline_yaml

    name = pipeline_name(args)
    params = pipeline_params(args, name)
    try:
        path = compile_pipeline(args.output, args.pipeline_root, args.image, params, args.audio_image, name,
                                bucket_secret=args.bucket_secret)
    except BucketSecretError as err:  # raised before anything is written
        log.error("%s", err)
        return 2
    summary = validate_pipeline_yaml(path)
    print(f"wrote {path}: {len(summary['executors'])} executors, parsed with the KFP protos")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from musictext_kfp.compile import CLUSTER_DEFAULTS

    parser = argparse.ArgumentParser(prog="musictext", description=__doc__)
    parser.add_argument("--log-level", default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline")
    run.add_argument("--local", action="store_true", help="execute with kfp.local on this machine")
    run.add_argument("--runs-dir", default="runs")
    run.add_argument("--run-id", default=None, help="name of the new run's directory (default: the UTC time)")
    run.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_ID",
                     help="continue a killed or failed local run (default: the newest unfinished one in "
                          "--runs-dir) with its parameters: finished tasks are reused, the rest rerun")
    run.add_argument("--verbose", action="store_true",
                     help="stream every task's full output as kfp.local prints it (it always goes "
                          "to runs/<run-id>/logs/)")
    run.add_argument("--dry-run", action="store_true",
                     help="list every source and walk the download/clip fan-out, checking each shard's "
                          "records without fetching audio (only the listing parameters apply)")
    add_pipeline_args(run)
    run.set_defaults(func=cmd_run)

    comp = sub.add_parser("compile", help="write the pipeline YAML for a Kubeflow cluster")
    comp.add_argument("--output", default="build/musictext.yaml")
    comp.add_argument("--pipeline-root", help="bucket for artifacts, e.g. gs://bucket/musictext")
    comp.add_argument("--image", help="component/training image (default ghcr.io/musictext/...)")
    comp.add_argument("--audio-image", help="audio-embedding step image (transformers<5, torchaudio)")
    comp.add_argument("--dry-run", action="store_true", help="compile the fan-out dry run instead")
    comp.add_argument("--bucket-secret", metavar="NAME[:KEY]",
                      help="Kubernetes Secret holding the bucket's service-account key (file KEY, default "
                           "key.json): mounted in every task and training job, with "
                           "GOOGLE_APPLICATION_CREDENTIALS pointing at it; the YAML holds only its name")
    add_pipeline_args(comp, CLUSTER_DEFAULTS)
    comp.set_defaults(func=cmd_compile)

    from musictext_kfp.datasets_cli import add_datasets_parser
    from musictext_kfp.evaluate_cli import add_evaluate_parser
    from musictext_kfp.search_cli import add_search_parser
    from musictext_kfp.serve_cli import add_serve_parser
    from musictext_kfp.submit import add_submit_parser

    add_datasets_parser(sub)
    add_serve_parser(sub)
    add_search_parser(sub)
    add_evaluate_parser(sub)
    add_submit_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
