"""Where a result was made: the commit, whether the tree was clean, the machine and the library versions.

A claim is fixed before it runs (configs and analysis committed first, then run unchanged); a result that names
its commit and says whether the tree held uncommitted changes lets anyone check that, where a commit's time
cannot (several commits can share one second). Outside a git checkout the commit is None."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def provenance(root: str | Path | None = None) -> dict:
    """{commit, tree_clean, changed (paths git reports), date_utc, machine, cores, python, torch, transformers}
    for the checkout at `root` (default: the one this package is in)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    commit, changed = None, None
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changed = [line[3:] for line in _git(root, "status", "--porcelain", "--untracked-files=normal",
                                             strip=False).splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        pass
    versions = {}
    for name in ("torch", "transformers"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"commit": commit, "tree_clean": None if changed is None else not changed, "changed": changed,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "machine": platform.platform(),
            "processor": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            **versions}


def _git(root: Path, *args: str, strip: bool = True) -> str:
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    return out.strip() if strip else out
