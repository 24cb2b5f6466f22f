"""`musictext serve` (the text service Navidrome calls) and `musictext embed-text` (one query).

    musictext serve --models gs://bucket/run/checkpoints [--port 9003] [--upstream http://sidecar:9002]
    musictext embed-text --model runs/x/checkpoints/muq_text_embedder "slow sad piano" [--json]

Also runs standalone: ``python -m musictext_kfp.serve_cli serve --models DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

N_SHOWN = 5  # values shown on embed-text's human-readable line


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return n


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def cmd_serve(args: argparse.Namespace) -> int:
    from musictext.serve import serve_main

    try:
        return serve_main(args)
    except (FileNotFoundError, ValueError) as exc:  # no exports, bad --device/--upstream
        print(f"serve: {exc}", file=sys.stderr)
        return 2


def describe_vector(name: str, vector: np.ndarray) -> str:
    shown = ", ".join(f"{v:+.4f}" for v in vector[:N_SHOWN])
    more = ", ..." if vector.shape[0] > N_SHOWN else ""
    return f"{name}: {vector.shape[0]}-D, norm {np.linalg.norm(vector):.6f}, [{shown}{more}]"


def cmd_embed_text(args: argparse.Namespace) -> int:
    from musictext.exports import load_export
    from musictext.serve import embedder_location, pick_device

    text = args.text
    if not text.strip():
        print("embed-text: the query is empty or only whitespace", file=sys.stderr)
        return 2
    try:
        location = embedder_location(args.model, args.name)
        model = load_export(location).to(pick_device(args.device))
    except (FileNotFoundError, ValueError) as exc:
        print(f"embed-text: {exc}", file=sys.stderr)
        return 2
    vector = model.embed_text(text)
    if args.json:
        print(json.dumps(vector.tolist()))
    else:
        folder = location.rstrip("/").rsplit("/", 1)[-1]
        print(describe_vector(args.name or folder.removesuffix("_text_embedder"), vector))
    return 0


def add_serve_parser(sub) -> None:
    from musictext.serve.app import MAX_TEXT_CHARS
    from musictext.serve.main import DEFAULT_HOST, DEFAULT_PORT

    sv = sub.add_parser("serve", help="serve Navidrome's /embed_text contract over exported text embedders",
                        description=f"POST /embed_text {{text, model}}, GET /models, GET /health. Queries "
                                    f"longer than {MAX_TEXT_CHARS} characters are refused (422).")
    sv.add_argument("--models", required=True,
                    help="directory (local path or bucket URI) holding {muq,mert,latent}_text_embedder/ "
                         "exports, e.g. a run's checkpoints/")
    sv.add_argument("--names", type=_names, metavar="A,B",
                    help="load only these model ids (default: every export found)")
    sv.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    sv.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    sv.add_argument("--device", default="auto",
                    help="auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N")
    sv.add_argument("--upstream", metavar="URL",
                    help="forward every other route to this sidecar (e.g. http://127.0.0.1:9002), so "
                         "Navidrome's single base URL can point here")
    sv.add_argument("--max-batch", type=_positive_int, default=32,
                    help="most concurrent queries embedded in one forward pass (1: no batching)")
    sv.add_argument("--batch-wait-ms", type=float, default=2.0,
                    help="how long the first query of a batch waits for others")
    sv.add_argument("--access-log", action="store_true", help="log every request")
    sv.set_defaults(func=cmd_serve)

    et = sub.add_parser("embed-text", help="embed one query with an exported text embedder and print it")
    et.add_argument("text")
    et.add_argument("--model", required=True,
                    help="an exported {name}_text_embedder directory, or a models directory with --name")
    et.add_argument("--name", help="model id in a models directory (muq, mert, latent; default muq)")
    et.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    et.add_argument("--json", action="store_true", help="print the vector as a JSON list")
    et.set_defaults(func=cmd_embed_text)


if __name__ == "__main__":  # python -m musictext_kfp.serve_cli serve ... (the whole musictext CLI)
    from musictext_kfp.cli import main

    sys.exit(main())
