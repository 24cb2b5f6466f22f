"""Where the repository's non-package folders (configs/, components/, pipelines/) live."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def repo_root() -> Path:
    """The checkout (or image copy) this package was installed from, editable.

    $MUSICTEXT_HOME wins; otherwise python/musictext/ sits two levels below the root.
    """
    env = os.environ.get("MUSICTEXT_HOME")
    return Path(env) if env else Path(__file__).resolve().parents[2]


def ensure_repo_on_path() -> Path:
    """Make ``components`` and ``pipelines`` importable (they are folders, not distributions)."""
    root = repo_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root
