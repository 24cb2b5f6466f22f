#!/usr/bin/env python3
"""Build and push the released musictext images, then record each one by digest.

Three images come out of images/: the GPU image (images/Dockerfile, CUDA torch: every KFP step,
the training job, the chart's hook and TensorBoard), its CPU variant (the same file with the CPU
torch index: CI, laptops, CPU-only clusters) and the audio-embedding image
(images/Dockerfile.audio). Before anything is built, every base image must be pinned by digest
(``name:tag@sha256:<64 hex>``); a tag alone is refused. Each image is pushed with
``docker buildx build --push``; the digest the registry stored comes back in buildx's metadata
file and is written to build/release/images.json as ``repo@sha256:...``, the form the chart
(``image.digest``, ``audioImage.digest``) and ``musictext compile --image/--audio-image`` take.

Usage (from the repository root, logged in to the registry):
  python images/release.py [--version 0.1.0] [--registry ghcr.io/musictext] [--platform linux/amd64]
                           [--base-image python:3.11.16-slim-bookworm@sha256:...] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REGISTRY = "ghcr.io/musictext"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
OUT = REPO / "build" / "release" / "images.json"


@dataclass(frozen=True)
class Image:
    key: str  # the name in images.json
    repository: str  # under the registry
    dockerfile: str  # relative to the repository root (the build context)
    tag_suffix: str = ""
    build_args: dict[str, str] = field(default_factory=dict)


IMAGES = (
    Image("musictext", "musictext", "images/Dockerfile"),
    Image("musictext-cpu", "musictext", "images/Dockerfile", "-cpu",
          {"TORCH_INDEX_URL": CPU_TORCH_INDEX, "REQUIRE_CUDA": "0"}),
    Image("musictext-audio", "musictext-audio", "images/Dockerfile.audio"),
)


# -- base image pins -----------------------------------------------------------------------------
def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of a Dockerfile, comments dropped and continuation lines joined."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        keyword, _, rest = (buf + line).partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    if buf:  # the last instruction would be lost (a FROM among them would escape the pin check)
        raise ValueError(f"dangling line continuation: {buf.strip()!r}")
    return out


def base_references(text: str, build_args: dict[str, str] | None = None) -> list[str]:
    """The external images the FROM lines pull, with ARG defaults (or build_args) filled in."""
    args = dict(build_args or {})
    stages: set[str] = set()
    refs = []
    for keyword, rest in _instructions(text):
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args.setdefault(name.strip(), default.strip().strip('"'))
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform=")]
            ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
            if ref not in stages and ref != "scratch":
                refs.append(ref)
    return refs


def is_pinned(ref: str) -> bool:
    """``name:tag@sha256:<64 hex>``: the digest fixes the content, the tag says what it is."""
    name, _, digest = ref.partition("@")
    return bool(DIGEST.fullmatch(digest)) and ":" in name.rsplit("/", 1)[-1]


def unpinned(images=IMAGES, build_args: dict[str, str] | None = None, root: Path = REPO) -> list[str]:
    """'<dockerfile>: <ref>' for every base image not pinned by digest."""
    bad = []
    for image in images:
        text = (root / image.dockerfile).read_text()
        for ref in base_references(text, {**image.build_args, **(build_args or {})}):
            if not is_pinned(ref):
                bad.append(f"{image.dockerfile}: {ref}")
    return sorted(set(bad))


# -- build and record ------------------------------------------------------------------------------
def package_version(root: Path = REPO) -> str:
    text = (root / "python" / "musictext" / "__init__.py").read_text()
    return re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M).group(1)


def tag(image: Image, registry: str, version: str) -> str:
    return f"{registry}/{image.repository}:{version}{image.tag_suffix}"


def build_command(image: Image, registry: str, version: str, platform: str, metadata_file: Path,
                  build_args: dict[str, str] | None = None) -> list[str]:
    cmd = ["docker", "buildx", "build", "--file", image.dockerfile, "--platform", platform]
    for name, value in {**image.build_args, **(build_args or {})}.items():
        cmd += ["--build-arg", f"{name}={value}"]
    # provenance and SBOM attestations ride along in the pushed index.
    cmd += ["--tag", tag(image, registry, version), "--provenance=mode=max", "--sbom=true",
            "--metadata-file", str(metadata_file), "--push", "."]
    return cmd


def pushed_reference(metadata: dict, image: Image, registry: str) -> str:
    """``repo@sha256:...`` of what the registry stored, from buildx's metadata file."""
    digest = metadata.get("containerimage.digest", "")
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"{image.key}: buildx metadata has no image digest (got {digest!r}); was it pushed?")
    return f"{registry}/{image.repository}@{digest}"


def usage_lines(refs: dict[str, str], version: str) -> list[str]:
    """How the recorded digests are used: the chart's values and the compile command."""
    digest = {k: ref.partition("@")[2] for k, ref in refs.items()}
    return [
        "helm upgrade --install musictext charts/musictext "
        f"--set image.tag={version} --set image.digest={digest['musictext']} "
        f"--set audioImage.tag={version} --set audioImage.digest={digest['musictext-audio']} "
        f"--set tensorboard.image.tag={version} --set tensorboard.image.digest={digest['musictext']}",
        f"musictext compile --image {refs['musictext']} --audio-image {refs['musictext-audio']}",
    ]


def release(registry: str, version: str, platform: str, build_args: dict[str, str], dry_run: bool,
            out: Path = OUT) -> dict[str, str]:
    bad = unpinned(build_args=build_args)
    if bad:
        raise SystemExit("refusing to release: base images must be pinned by digest "
                         "(name:tag@sha256:<64 hex>):\n  " + "\n  ".join(bad))
    refs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for image in IMAGES:
            metadata_file = Path(tmp) / f"{image.key}.json"
            cmd = build_command(image, registry, version, platform, metadata_file, build_args)
            print("+", shlex.join(cmd), flush=True)
            if dry_run:
                continue
            subprocess.run(cmd, cwd=REPO, check=True)
            refs[image.key] = pushed_reference(json.loads(metadata_file.read_text()), image, registry)
    if dry_run:
        return refs
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"version": version, "images": refs}, indent=2) + "\n")
    print(f"recorded {out}:")
    print("\n".join(f"  {k}: {v}" for k, v in refs.items()))
    print("\n".join(usage_lines(refs, version)))
    return refs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=package_version(), help="image tag (default: the package version)")
    ap.add_argument("--registry", default=REGISTRY)
    ap.add_argument("--platform", default="linux/amd64")
    ap.add_argument("--base-image", help="override PYTHON_IMAGE (must carry @sha256:)")
    ap.add_argument("--out", type=Path, default=OUT, help="where the digests are recorded")
    ap.add_argument("--dry-run", action="store_true", help="check the pins and print the build commands only")
    args = ap.parse_args(argv)
    build_args = {"PYTHON_IMAGE": args.base_image} if args.base_image else {}
    release(args.registry, args.version, args.platform, build_args, args.dry_run, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
