"""Making a finished folder survive a power loss, not only a crash of this process.

`os.replace` makes a folder appear whole or not at all to other processes, but the kernel may still hold its files'
bytes and the rename itself in memory: after a power loss or kernel crash the final folder could hold empty or
partial files that look like a model. Databases order their writes with fsync; so do we: every file of the staged
folder, then the folder itself, before the rename; the parent folder (which records the rename) after it."""

from __future__ import annotations

import os
from pathlib import Path


def sync_path(path: Path) -> None:
    """fsync one file or folder (a folder's fsync makes its entries, i.e. creations and renames, durable)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # folders cannot be opened on some systems (Windows): nothing more can be done there
        return
    try:
        os.fsync(fd)
    except OSError:  # file systems without fsync on folders (some network mounts) refuse it: nothing to gain
        pass
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """fsync every file below `folder`, then every folder, deepest first, ending with `folder` itself."""
    folders = []
    for root, _, files in os.walk(folder):
        for name in files:
            sync_path(Path(root) / name)
        folders.append(Path(root))
    for path in reversed(folders):
        sync_path(path)
