"""`musictext index DIR --family F` and `musictext search "query" --family F --models DIR`:
search your own library (see musictext.search)."""

from __future__ import annotations

import argparse
import json
import sys


def _families(value: str) -> list[str]:
    from musictext.exports import family_of

    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected family names separated by commas")
    try:
        return [family_of(n) for n in names]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# What a user's input can be wrong about (missing folder/model/index, mismatched spaces): a
# one-line message, not a traceback.
USER_ERRORS = (FileNotFoundError, LookupError, ValueError)


def cmd_index(args: argparse.Namespace) -> int:
    from musictext.search import index_library
    from musictext.search.store import quiet_milvus_logs

    quiet_milvus_logs()
    try:
        summary = index_library(args.dir, args.family, args.profile, args.db, models_dir=args.models,
                                basis=args.basis, max_milvus_dim=args.max_milvus_dim, device=args.device)
    except USER_ERRORS as err:
        print(f"musictext index: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        where = summary["vector_file"] or f"{summary['db']} collection {summary['collection']!r}"
        print(f"{summary['family']}: {summary['embedded']} indexed, {summary['skipped']} already there, "
              f"{summary['rejected']} rejected (see {summary['rejected_file']}) -> {where} "
              f"[{summary['backend']}, {summary['dim']}-D]")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from musictext.search import format_hits, search
    from musictext.search.store import quiet_milvus_logs

    quiet_milvus_logs()
    families = args.families or [args.family]
    try:
        hits = search(args.query, families, args.models, args.db, args.top)
    except USER_ERRORS as err:
        print(f"musictext search: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([h.row() for h in hits], indent=1, ensure_ascii=False))
    elif hits:
        print(format_hits(hits, fused=len(families) > 1))
    else:
        print("no tracks indexed for this space", file=sys.stderr)
    return 0


def add_search_parser(sub) -> None:
    from musictext.config import FAMILIES
    from musictext.search.store import DB_ENV, MILVUS_MAX_DIM

    db_help = (f"Milvus Lite file (a local path ending in .db) or Milvus server URI (http://host:19530). "
               f"Default: ${DB_ENV}, else ~/.local/share/musictext/library.db ($XDG_DATA_HOME)")

    ix = sub.add_parser("index", help="compute each track's stored vector (Navidrome's upload path) into Milvus")
    ix.add_argument("dir", help="music folder (local path or bucket URI)")
    ix.add_argument("--family", required=True, choices=FAMILIES)
    ix.add_argument("--profile", default="production", choices=["production", "demo"],
                    help="demo: tiny random-init audio models that run offline")
    ix.add_argument("--db", help=db_help)
    ix.add_argument("--models", help="exports directory (a run's checkpoints/): its reduced_basis.npz puts a space "
                                     "wider than --max-milvus-dim (MERT) into Milvus")
    ix.add_argument("--basis", help="a reduced_basis.npz to index in (overrides the one under --models)")
    ix.add_argument("--max-milvus-dim", type=int, default=MILVUS_MAX_DIM,
                    help="wider spaces without a reduced basis go to an exact-search vector file next to the db "
                         "(default: %(default)s, Milvus's limit)")
    ix.add_argument("--device", help="torch device for the audio model (default: cuda when present, else cpu)")
    ix.add_argument("--json", action="store_true", help="print the summary as JSON")
    ix.set_defaults(func=cmd_index)

    se = sub.add_parser("search", help="rank your indexed tracks for a text query")
    se.add_argument("query")
    which = se.add_mutually_exclusive_group()
    which.add_argument("--family", default="muq", type=lambda v: _families(v)[0],
                       help="the space to search (muq, mert, music2latent/latent; default muq)")
    which.add_argument("--families", type=_families,
                       help="several spaces, e.g. muq,mert,music2latent: fused by reciprocal-rank fusion (k=60)")
    se.add_argument("--models", required=True, help="exports directory (a run's checkpoints/) with "
                                                   "{muq,mert,latent}_text_embedder/")
    se.add_argument("--db", help=db_help)
    se.add_argument("--top", type=int, default=10)
    se.add_argument("--json", action="store_true", help="print the hits as JSON")
    se.set_defaults(func=cmd_search)


def main(argv: list[str] | None = None) -> int:
    from musictext.logs import setup_logging

    parser = argparse.ArgumentParser(prog="musictext")
    parser.add_argument("--log-level", default=None)
    add_search_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
