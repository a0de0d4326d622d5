"""Where the verifier keeps its cache (git mirrors, Debian imports, builds, runs)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "VERIFIER_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$VERIFIER_CACHE_DIR``, else ``$XDG_CACHE_HOME/memcached-verifier``, else ~/.cache/..."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "memcached-verifier"


class CacheLayout:
    """Named sub-directories of one cache root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def mirrors(self) -> Path:
        return self.root / "mirrors"

    @property
    def debian(self) -> Path:
        return self.root / "debian"

    @property
    def builds(self) -> Path:
        return self.root / "builds"

    @property
    def ccache(self) -> Path:
        """ccache directories of build users (``ccache/<user>``, owned by that user)."""
        return self.root / "ccache"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def tools(self) -> Path:
        return self.root / "tools"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def bisects(self) -> Path:
        return self.root / "bisects"

    @property
    def auto(self) -> Path:
        """--amplify auto: discoveries (per build) and the memory (shared)."""
        return self.root / "auto"

    @property
    def matrix_cells(self) -> Path:
        return self.root / "matrix" / "cells"
