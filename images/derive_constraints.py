#!/usr/bin/env python3
"""Print a constraints file minus the packages that an image's own requirements file pins.

The audio-embedding image (MuQ-MuLan, MERT, Music2Latent) needs transformers<5 while
requirements/constraints.txt pins the main image's 5.x stack; its requirements file
(requirements/audio.txt) pins its own versions of those packages.
Every other pin (torch, pyarrow, kfp, ...) still applies, so both images agree where they can.

Usage: derive_constraints.py CONSTRAINTS REQUIREMENTS > OUT
"""

from __future__ import annotations

import re
import sys

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 name normalisation (Transformers, huggingface_hub -> huggingface-hub)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # options such as -r/-c/--index-url
            continue
        m = _NAME.match(line)
        if m:
            names.add(canonical(m.group(1)))
    return names


def derive(constraints: str, requirements: str) -> str:
    own = requirement_names(requirements)
    kept = []
    for line in constraints.splitlines():
        m = _NAME.match(line.split("#", 1)[0])
        if m and not line.lstrip().startswith("-") and canonical(m.group(1)) in own:
            kept.append(f"# dropped (pinned by the image's requirements): {line.strip()}")
        else:
            kept.append(line)
    return "\n".join(kept) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as c, open(argv[2]) as r:
        sys.stdout.write(derive(c.read(), r.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
