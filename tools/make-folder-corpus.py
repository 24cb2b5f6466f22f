"""Write a "user's music folder" for trying the `folder` source: N rendered pieces of the
synthetic corpus as FLAC files in artist folders, with a captions.csv (path,caption[,tags];
several rows per file = several captions; no split column, so splits are hashed).

    python tools/make-folder-corpus.py DIR [--tracks 120] [--seed 7]
    musictext run --local --sources folder --folder DIR
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import soundfile as sf

from musictext.ingest.synthetic.attributes import make_spec
from musictext.ingest.synthetic.captions import captions_for, tags_for
from musictext.ingest.synthetic.render import check_renderer, render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    parser.add_argument("--tracks", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    root = Path(args.dir)
    fluidsynth, soundfont = check_renderer()
    rows = []
    for i in range(args.tracks):
        spec = make_spec(args.seed, i)
        rel = f"{spec.family}/track {i:04d}.flac".replace(" ", "_", 1)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), render(spec, fluidsynth, soundfont), 44100, format="FLAC")
        tags = ";".join(tags_for(spec)[:4])
        rows += [(rel, caption, tags) for caption in captions_for(spec)[:2]]
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("path", "caption", "tags"))
    writer.writerows(rows)
    (root / "captions.csv").write_text(out.getvalue(), encoding="utf-8", newline="")
    print(f"{args.tracks} tracks, {len(rows)} captions in {root}")


if __name__ == "__main__":
    main()
