"""The build cache: one directory per build key, promoted atomically, evicted by age/size.

    builds/<key>/meta.json   what was built (commit, patches, recipe, toolchain), status, timings
    builds/<key>/build.log   the full build log (kept for failures too)
    builds/<key>/tree/       the patched source tree with the built binary (ok builds only)
    builds/<key>/used        its mtime is the last use (least-recently-used eviction)

An entry appears only by ``os.replace`` of a finished staging directory, so readers never
see a half-built entry; builds of one key are serialised by a file lock.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.util.atomic import write_json
from verifier.util.disk import tree_size


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.meta.get("status") == "ok"

    @property
    def tree(self) -> Path:
        return self.path / "tree"

    @property
    def binary(self) -> Path:
        return self.tree / "memcached"

    @property
    def log(self) -> Path:
        return self.path / "build.log"

    @property
    def last_used(self) -> float:
        stamp = self.path / "used"
        return stamp.stat().st_mtime if stamp.exists() else self.path.stat().st_mtime

    def size_bytes(self) -> int:
        return tree_size(self.path)


class BuildCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> CacheEntry | None:
        path = self.root / key
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        entry = CacheEntry(key, path, meta)
        if entry.ok and not entry.binary.is_file():
            return None  # damaged by hand: treat as a miss, the rebuild replaces it
        return entry

    def touch(self, entry: CacheEntry) -> None:
        (entry.path / "used").touch()

    def staging(self, key: str) -> Path:
        """A fresh private directory to build ``key`` in (same filesystem as the cache)."""
        base = self.root / ".staging"
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{key[:16]}-", dir=base))

    def promote(self, key: str, staging: Path, meta: dict[str, Any]) -> CacheEntry:
        """Write ``meta`` into ``staging`` and move it into place as the entry for ``key``."""
        write_json(staging / "meta.json", meta)
        (staging / "used").touch()
        final = self.root / key
        if final.exists():  # an older failed or damaged entry: replace it
            trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.root / ".staging"))
            os.replace(final, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(staging, final)
        entry = self.get(key)
        assert entry is not None
        return entry

    def entries(self) -> Iterator[CacheEntry]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                continue
            entry = self.get(path.name)
            if entry is not None:
                yield entry

    def remove(self, entry: CacheEntry) -> None:
        trash = self.root / ".staging" / f"rm-{entry.key[:16]}-{os.getpid()}-{time.monotonic_ns()}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.replace(entry.path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def clean(
        self,
        *,
        everything: bool = False,
        failed: bool = False,
        older_than_s: float | None = None,
        max_bytes: int | None = None,
    ) -> list[CacheEntry]:
        """Remove entries by the given rules (LRU first for ``max_bytes``); return them."""
        now = time.time()
        entries = sorted(self.entries(), key=lambda e: e.last_used)
        doomed = [
            e
            for e in entries
            if everything
            or (failed and not e.ok)
            or (older_than_s is not None and now - e.last_used > older_than_s)
        ]
        if max_bytes is not None:
            kept = [e for e in entries if e not in doomed]
            total = sum(e.size_bytes() for e in kept)
            for entry in kept:  # least recently used first
                if total <= max_bytes:
                    break
                total -= entry.size_bytes()
                doomed.append(entry)
        for entry in doomed:
            self.remove(entry)
        self._sweep_staging(now)
        return doomed

    def _sweep_staging(self, now: float, stale_s: float = 6 * 3600) -> None:
        """Drop staging directories left by killed builds (never one that may be in use)."""
        base = self.root / ".staging"
        for path in base.iterdir() if base.is_dir() else ():
            if now - path.stat().st_mtime > stale_s:
                shutil.rmtree(path, ignore_errors=True)
