"""The build cache: one directory per build key, promoted atomically, evicted by age/size.

    builds/<key>/meta.json   what was built (``BuildMeta``: commit, patches, recipe, ...)
    builds/<key>/build.log   the full build log (kept for failures too)
    builds/<key>/tree/       the patched source tree with the built binary (ok builds only)
    builds/<key>/used        its mtime is the last use (least-recently-used eviction)
    locks/pin-<key>.lock     shared-locked by every user of the build (``Builder.acquire``)

An entry appears only by ``os.replace`` of a finished staging directory, so readers never
see a half-built entry; builds of one key are serialised by a file lock. ``clean`` removes
an entry only while holding its pin exclusively, so a build in use is skipped, never
pulled from under a running server; cleans running at once each take what is left.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verifier.util.atomic import write_json
from verifier.util.locks import file_lock, held_exclusively, try_file_lock

STAGING_STALE_S = 6 * 3600  # a build takes minutes; a staging dir this old was abandoned
_PIN_ATTEMPTS = 4  # a pin can change hands between two tries; past this, it is in use
_CLEAN_WAIT_S = 120.0  # another clean holds a pin only while it deletes one entry


class BuildStatus(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"  # a real configure/compile failure: cached, not retried by itself


@dataclass(frozen=True)
class PatchRecord:
    name: str
    sha256: str
    description: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256, "description": self.description}


@dataclass(frozen=True)
class BuildMeta:
    """What one cache entry holds, as stored in its ``meta.json``."""

    key: str
    commit: str = ""
    describe: str = ""
    source: str = ""
    patches: tuple[PatchRecord, ...] = ()
    reverse: bool = False
    patch_notes: tuple[str, ...] = ()
    recipe: str = ""
    toolchain: Mapping[str, str] = field(default_factory=dict)
    sanitizer: str = ""  # --sanitize (address, thread, undefined); "" for a plain build
    tls: bool = False  # --tls: configured with --enable-tls
    build_user: str = ""  # who ran the build steps ("" in entries older than the field)
    created: float = 0.0
    phases: Mapping[str, float] = field(default_factory=dict)
    build_seconds: float = 0.0
    status: BuildStatus = BuildStatus.FAILED

    @property
    def ok(self) -> bool:
        return self.status is BuildStatus.OK

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["patches"] = [asdict(p) for p in self.patches]
        data["patch_notes"] = list(self.patch_notes)
        data["toolchain"] = dict(self.toolchain)
        data["phases"] = dict(self.phases)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], key: str = "") -> BuildMeta:
        """Read a stored meta; fields an older verifier did not write take their defaults."""
        try:
            status = BuildStatus(data.get("status", BuildStatus.FAILED))
        except ValueError:
            status = BuildStatus.FAILED
        return cls(
            key=str(data.get("key") or key),
            commit=str(data.get("commit", "")),
            describe=str(data.get("describe", "")),
            source=str(data.get("source", "")),
            patches=tuple(
                PatchRecord(
                    str(p.get("name", "?")),
                    str(p.get("sha256", "")),
                    str(p.get("description") or ""),
                )
                for p in data.get("patches", [])
                if isinstance(p, Mapping)
            ),
            reverse=bool(data.get("reverse", False)),
            patch_notes=tuple(str(n) for n in data.get("patch_notes", [])),
            recipe=str(data.get("recipe", "")),
            toolchain={str(k): str(v) for k, v in dict(data.get("toolchain", {})).items()},
            sanitizer=str(data.get("sanitizer", "")),
            tls=bool(data.get("tls", False)),
            build_user=str(data.get("build_user", "")),
            created=float(data.get("created", 0.0)),
            phases={str(k): float(v) for k, v in dict(data.get("phases", {})).items()},
            build_seconds=float(data.get("build_seconds", 0.0)),
            status=status,
        )


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    meta: BuildMeta

    @property
    def ok(self) -> bool:
        return self.meta.ok

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
        """Mtime of ``used`` (else of the entry; 0.0 once the entry is gone)."""
        for stamp in (self.path / "used", self.path):
            with contextlib.suppress(OSError):
                return stamp.stat().st_mtime
        return 0.0

    def size_bytes(self) -> int:
        """Bytes of regular files under the entry; files vanishing meanwhile count 0."""
        total = 0
        for top, _dirs, files in os.walk(self.path):
            for name in files:
                with contextlib.suppress(OSError):
                    info = os.lstat(os.path.join(top, name))
                    if not os.path.islink(os.path.join(top, name)):
                        total += info.st_size
        return total


@dataclass(frozen=True)
class CleanResult:
    removed: list[CacheEntry]
    skipped: list[CacheEntry]  # pinned: in use by a running verifier


class BuildCache:
    def __init__(self, root: Path, locks_dir: Path | None = None) -> None:
        self.root = root
        self.locks_dir = locks_dir if locks_dir is not None else root.parent / "locks"

    def pin_path(self, key: str) -> Path:
        return self.locks_dir / f"pin-{key}.lock"

    def get(self, key: str) -> CacheEntry | None:
        path = self.root / key
        try:
            data = json.loads((path / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        entry = CacheEntry(key, path, BuildMeta.from_json(data, key))
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

    def promote(self, key: str, staging: Path, meta: BuildMeta) -> CacheEntry:
        """Write ``meta`` into ``staging`` and move it into place as the entry for ``key``."""
        write_json(staging / "meta.json", meta.to_json())
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

    def keep_transient_log(self, key: str, log: Path) -> Path:
        """Keep the log of a build that failed for a passing reason (no entry is made):
        ``builds/.transient/<key>.log``, replaced by the next such failure, swept like
        staging directories."""
        kept = self.root / ".transient" / f"{key}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(log, kept)
        except OSError:
            return log
        return kept

    def entries(self) -> Iterator[CacheEntry]:
        try:
            names = sorted(path.name for path in self.root.iterdir())
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith("."):
                continue
            entry = self.get(name)
            if entry is not None:
                yield entry

    def remove(self, entry: CacheEntry) -> bool:
        """Move the entry out of sight, then delete it; False if it was already gone."""
        trash = self.root / ".staging" / f"rm-{entry.key[:16]}-{os.getpid()}-{time.monotonic_ns()}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(entry.path, trash)
        except FileNotFoundError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def remove_unless_pinned(self, entry: CacheEntry) -> bool | None:
        """Remove ``entry`` if nobody uses it: True removed, False already gone, None pinned.

        A pin held shared is a user: skip. A pin held exclusively is another clean removing
        this very entry: wait for it, then find the entry gone (not "in use")."""
        pin_path = self.pin_path(entry.key)
        for _attempt in range(_PIN_ATTEMPTS):
            with try_file_lock(pin_path) as pin:
                if pin is not None:
                    removed = self.remove(entry)  # False: another clean took it first
                    pin.unlink()  # only an exclusive holder may; the next user makes a new one
                    return removed
            if held_exclusively(pin_path):
                with file_lock(pin_path, shared=True, timeout_s=_CLEAN_WAIT_S):
                    pass
        return None

    def clean(
        self,
        *,
        everything: bool = False,
        failed: bool = False,
        older_than_s: float | None = None,
        max_bytes: int | None = None,
    ) -> CleanResult:
        """Remove entries by the given rules (LRU first for ``max_bytes``); builds in use
        are skipped and reported."""
        now = time.time()
        entries = sorted(self.entries(), key=lambda e: e.last_used)
        doomed = [
            e
            for e in entries
            if everything
            or (failed and not e.ok)
            or (older_than_s is not None and now - e.last_used > older_than_s)
        ]
        removed: list[CacheEntry] = []
        skipped: list[CacheEntry] = []

        def take(entry: CacheEntry) -> bool:
            outcome = self.remove_unless_pinned(entry)
            if outcome is None:
                skipped.append(entry)
            elif outcome:
                removed.append(entry)
            return outcome is not None

        for entry in doomed:
            take(entry)
        if max_bytes is not None:
            kept = [e for e in entries if e not in doomed]
            sizes = {e.key: e.size_bytes() for e in kept}
            total = sum(sizes.values())
            for entry in kept:  # least recently used first; a pinned one stays and counts
                if total <= max_bytes:
                    break
                if take(entry):
                    total -= sizes[entry.key]
        self._sweep_staging(now)
        return CleanResult(removed, skipped)

    def _sweep_staging(self, now: float, stale_s: float = STAGING_STALE_S) -> None:
        """Drop staging directories left by killed builds (never one that may be in use) and
        old logs of transient failures."""
        paths: list[Path] = []
        for base in (self.root / ".staging", self.root / ".transient"):
            with contextlib.suppress(FileNotFoundError):
                paths += base.iterdir()
        for path in paths:
            with contextlib.suppress(OSError):
                if now - path.lstat().st_mtime > stale_s:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink()
