"""Disk usage of a directory tree."""

from __future__ import annotations

from pathlib import Path


def tree_size(path: Path) -> int:
    """Bytes in the regular files under ``path`` (symlinks not followed; 0 if absent)."""
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
