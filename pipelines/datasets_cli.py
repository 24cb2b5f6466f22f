"""`musictext datasets`: list the sources, parse a dataset's published metadata into records
(no audio downloaded), and print per-source statistics."""

from __future__ import annotations

import argparse
import json
import sys


def _option(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected OPTION=VALUE, got {value!r}")
    return key, val


def _parse(source_name: str, metadata: str | None, options: list[tuple[str, str]]):
    """(records, rejections) of one source's published metadata under ``metadata``."""
    from musictext.ingest.base import ListContext
    from musictext.ingest.registry import get_source

    source = get_source(source_name)
    raw = dict(options)
    if metadata:
        raw["dir" if source_name == "folder" else "metadata"] = metadata
    opts = source.options(raw)
    ctx = ListContext()
    records = list(source.records(opts, ctx))
    return records, ctx.rejections


def cmd_list(args: argparse.Namespace) -> int:
    from musictext.ingest.registry import available, get_source

    for name in available():
        source = get_source(name)
        print(f"{name}\tphase {source.phase}\t{source.description}")
    return 0


def cmd_records(args: argparse.Namespace) -> int:
    from musictext.ingest.records import dump_line

    records, rejections = _parse(args.source, args.metadata, args.option)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for record in records[: args.limit] if args.limit else records:
            out.write(dump_line(record) + "\n")
    finally:
        if args.out:
            out.close()
    if args.rejected:
        with open(args.rejected, "w", encoding="utf-8") as fh:
            for row in rejections.rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{args.source}: {len(records)} records, {len(rejections)} rejected"
          + (f" -> {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from musictext.corpus_stats import corpus_stats, stats_markdown

    rows, rejected = [], []
    for path in args.records or []:
        with open(path, encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    for name in args.sources:
        records, rejections = _parse(name, args.metadata, args.option)
        rows.extend(r.row() for r in records)
        rejected.extend(rejections.rows)
    if not rows and not rejected:
        print("nothing to count: name sources (with --metadata) or give --records files", file=sys.stderr)
        return 2
    stats = corpus_stats(rows, rejected)
    print(json.dumps(stats, indent=1) if args.json else stats_markdown(stats, "Records per source"))
    return 0


def add_datasets_parser(sub) -> None:
    ds = sub.add_parser("datasets", help="the data sources: list them, parse metadata, count")
    dsub = ds.add_subparsers(dest="datasets_command", required=True)

    ls = dsub.add_parser("list", help="the registered sources, one per line (name first)")
    ls.set_defaults(func=cmd_list)

    opt = dict(type=_option, action="append", default=[], metavar="OPTION=VALUE",
               help="a source option (repeatable), e.g. split=1 or include_unbalanced=true")
    rec = dsub.add_parser("records", help="parse a dataset's published metadata files into unified records "
                                          "(JSON lines), without downloading audio")
    rec.add_argument("source")
    rec.add_argument("--metadata", help="directory holding the published files (found by name at any depth); "
                                        "for `folder`, the music directory. Default: fetch them into the cache")
    rec.add_argument("--out", help="write the records here instead of stdout")
    rec.add_argument("--rejected", help="write the rejected rows (JSON lines) here")
    rec.add_argument("--limit", type=int, default=0, help="print at most this many records")
    rec.add_argument("--option", **opt)
    rec.set_defaults(func=cmd_records)

    st = dsub.add_parser("stats", help="per-source counts, hours, caption lengths and rejections")
    st.add_argument("sources", nargs="*", help="sources to parse (with --metadata / --option)")
    st.add_argument("--metadata")
    st.add_argument("--records", action="append", help="records JSON-lines file(s) to count (repeatable)")
    st.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    st.add_argument("--option", **opt)
    st.set_defaults(func=cmd_stats)
