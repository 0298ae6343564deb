"""File permissions of what modelyard writes.

safetensors 0.8 writes through a temporary file created with mode 0600 (safetensors issue #782), so a model saved by
one Unix user could not be read by another (a serving account, a shared runs folder) although the JSON beside it
could. Files modelyard writes get the mode the process's umask gives any new file instead.
"""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def as_umask_allows(*paths: Path) -> None:
    """Give each file, and every file under each folder, the mode 0o666 & ~umask (what `open()` would have)."""
    mode = 0o666 & ~_umask()
    for path in map(Path, paths):
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
        for f in files:
            if f.stat().st_mode & 0o777 != mode:
                os.chmod(f, mode)
