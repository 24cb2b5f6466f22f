"""`musictext evaluate`: an exported text embedder against a records file, outside the pipeline.

    musictext evaluate --model runs/latest/checkpoints/muq_text_embedder \\
        --records song_describer.jsonl --audio ~/datasets/song_describer/audio --out eval/

Retrieval both ways with chance (pessimistic ties), per-block cosine, cosine histograms,
zero-shot tagging from the records' tags, t-SNE/UMAP maps; writes metrics.json, report.html
(plots embedded) and summary.md to --out and prints a short table.
"""

from __future__ import annotations

import argparse
import sys


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _projections(value: str) -> list[str]:
    from musictext.evaluate.projection import METHODS

    names = [] if value.strip().lower() == "none" else _csv(value)
    bad = [n for n in names if n not in METHODS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown projection {bad[0]!r}; known: {', '.join(METHODS)} or none")
    return names


def load_records(path: str, split: str = "test") -> list:
    """The records of a JSON-lines file in ``split`` ("all": every split). A bad line is an
    error naming the file and line; so is a track id given twice."""
    from musictext import storage
    from musictext.ingest.records import parse_row
    from musictext.rejects import ItemError

    if not storage.exists(path):
        raise FileNotFoundError(f"records file {path} does not exist")
    records, seen = [], {}
    for n, line in enumerate(storage.read_bytes(path).decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = parse_row(line, f"{path}:{n}")
        except ItemError as err:
            raise ValueError(f"{path} line {n}: {err.reason}") from None
        if record.track_id in seen:
            raise ValueError(f"{path} line {n}: track id {record.track_id!r} already on line {seen[record.track_id]}")
        seen[record.track_id] = n
        if split == "all" or record.split == split:
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no records in split {split!r} (of {len(seen)})")
    return records


def source_facets() -> dict[str, set[str]]:
    """Tags known as genres or moods: the words the sources sort tags into facets with (what
    ``musictext.ingest.describe`` writes captions from). A word both a genre and a mood
    ("ambient") counts as a genre."""
    from musictext.evaluate.tagging import normalise_tag
    from musictext.ingest.sources import jamendo, magnatagatune, msd_lastfm

    mtat = {facet: {phrase for f, phrase in filter(None, magnatagatune.TAG_FACETS.values()) if f == facet}
            | {tag for tag, v in magnatagatune.TAG_FACETS.items() if v and v[0] == facet}
            for facet in ("genre", "mood")}
    genres = set(msd_lastfm.GENRES) | set(jamendo.GENRE_WORDS) | set(jamendo.GENRE_WORDS.values()) | mtat["genre"]
    moods = set(msd_lastfm.MOODS) | set(jamendo.MOOD_WORDS) | set(jamendo.MOOD_RENAMES.values()) | mtat["mood"]
    genres = {normalise_tag(g) for g in genres}
    return {"genre": genres, "mood": {normalise_tag(m) for m in moods} - genres}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from musictext import storage
    from musictext.evaluate.core import (
        METRICS_JSON,
        REPORT_HTML,
        SUMMARY_MD,
        EvalOptions,
    )
    from musictext.evaluate.render import short_table
    from musictext.evaluate.standalone import evaluate_records

    options = EvalOptions(
        templates=args.template or ["a {tag} track"],
        top_tags=args.top_tags or None,
        genres=args.genres,
        moods=args.moods,
        facets=source_facets(),
        projections=args.projections,
        block=args.block,
        seed=args.seed,
    )
    try:
        records = load_records(args.records, args.split)
        metrics = evaluate_records(
            args.model, records, args.out, records_name=args.records, audio_dir=args.audio, targets=args.targets,
            ids=args.ids, family=args.family, profile=args.profile, split=args.split, device=args.device,
            options=options,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"musictext evaluate: {err}", file=sys.stderr)
        return 2
    print(short_table(metrics))
    if metrics.get("rejected_count"):
        print(f"rejected: {metrics['rejected_count']} records (listed in {METRICS_JSON})")
    for name in (METRICS_JSON, REPORT_HTML, SUMMARY_MD):
        print(storage.join(args.out, name))
    return 0


def add_evaluate_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="evaluate an exported text embedder on a records file "
                                         "(retrieval both ways, tagging, maps)")
    ev.add_argument("--model", required=True,
                    help="an exported {name}_text_embedder directory, or a models directory with --family")
    ev.add_argument("--family", help="muq, mert or music2latent (or muq/mert/latent): which export of a "
                                     "models directory, and which audio model embeds --audio files")
    ev.add_argument("--records", required=True, help="unified records JSON lines (`musictext datasets records`)")
    ev.add_argument("--split", default="test", choices=["train", "valid", "test", "all"],
                    help="evaluate the records of this split (default test)")
    src = ev.add_mutually_exclusive_group()
    src.add_argument("--audio", help="folder holding the audio: path records' files relative to it, other "
                                     "records' files by archive member, URL file name or <track_id>.<ext>")
    src.add_argument("--targets", help="precomputed audio vectors: a targets .parquet (clip_id, target), a "
                                       "targets directory, or an .npy with --ids")
    ev.add_argument("--ids", help="with an .npy --targets: the row ids (one a line, or a JSON list)")
    ev.add_argument("--profile", default="production", help="family config profile for --audio (default production)")
    ev.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    ev.add_argument("--out", required=True, help="output directory: metrics.json, report.html, summary.md, plots")
    ev.add_argument("--template", action="append",
                    help='zero-shot prompt with {tag} (repeatable; averaged); default "a {tag} track"')
    ev.add_argument("--top-tags", type=int, default=50, help="the most frequent tags scored (0: all)")
    ev.add_argument("--genres", type=_csv, help="comma-separated genre tags for genre accuracy "
                                                "(default: the tags the sources' vocabularies call genres)")
    ev.add_argument("--moods", type=_csv, help="comma-separated mood tags for mood accuracy")
    ev.add_argument("--projections", type=_projections, default=["tsne", "umap"],
                    help="maps to draw: tsne,umap (default), tsne, umap or none")
    ev.add_argument("--block", type=int, default=1024, help="queries ranked at once (memory: block x gallery)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the maps and of sampled negatives")
    ev.set_defaults(func=cmd_evaluate)


def main(argv: list[str] | None = None) -> int:
    from musictext.logs import setup_logging

    parser = argparse.ArgumentParser(prog="musictext")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    setup_logging(None)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
