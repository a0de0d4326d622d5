"""`verifier cache clean`: each rule removes exactly what it says; a build in use is never
removed; cleans running at once do not crash; old entries still load.

The rules are checked on small caches of made-up entries (known ages, sizes and status);
pinning is checked on a real Debian build (copied from the session cache, so nothing is
rebuilt) held through ``Builder.acquire`` while the real CLI cleans.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verifier.build.builder import Builder, BuildRequest, BuildResult
from verifier.build.cache import BuildCache, BuildMeta, BuildStatus, PatchRecord
from verifier.paths import CacheLayout
from verifier.util.locks import file_lock

from conftest import ROOT, run_cli

DAY = 86400.0
MIB = 1024 * 1024


def _make_entry(
    cache: CacheLayout,
    key: str,
    *,
    status: BuildStatus = BuildStatus.OK,
    age_days: float = 0.0,
    size: int = 1024,
    files: int = 1,
    meta: dict | None = None,
) -> Path:
    """One cache entry as the builder leaves it; ``used`` dated ``age_days`` ago."""
    path = cache.builds / key
    path.mkdir(parents=True)
    record = meta or BuildMeta(key=key, describe=f"ref-{key}", status=status).to_json()
    (path / "meta.json").write_text(json.dumps(record))
    (path / "build.log").write_text("log\n")
    if status is BuildStatus.OK:
        (path / "tree").mkdir()
        (path / "tree" / "memcached").write_bytes(b"\0" * size)
        for index in range(files - 1):
            (path / "tree" / f"file{index}.o").write_bytes(b"x" * 64)
    stamp = time.time() - age_days * DAY
    (path / "used").touch()
    os.utime(path / "used", (stamp, stamp))
    return path


def _keys(cache: CacheLayout) -> set[str]:
    if not cache.builds.is_dir():
        return set()
    return {p.name for p in cache.builds.iterdir() if not p.name.startswith(".")}


def _listed(cache: CacheLayout) -> set[str]:
    """Keys (12 characters) that `cache list` shows."""
    result = run_cli("cache", "list", cache=cache)
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"^([0-9a-z][0-9a-z-]{11})\s", result.stdout, re.MULTILINE))


def _sample_cache(root: Path) -> CacheLayout:
    """Four entries: old (10 d, 1 MiB), middle (3 d, 2 MiB), failed (1 d), fresh (0 d,
    3 MiB); plus a run directory."""
    cache = CacheLayout(root)
    _make_entry(cache, "old-000000000000", age_days=10, size=1 * MIB)
    _make_entry(cache, "middle-000000000", age_days=3, size=2 * MIB)
    _make_entry(cache, "failed-000000000", status=BuildStatus.FAILED, age_days=1)
    _make_entry(cache, "fresh-0000000000", age_days=0, size=3 * MIB)
    (cache.runs / "some-run").mkdir(parents=True)
    (cache.runs / "some-run" / "report.json").write_text("{}")
    return cache


ALL = {"old-000000000000", "middle-000000000", "failed-000000000", "fresh-0000000000"}


@pytest.mark.parametrize(
    ("rule", "gone", "runs_gone"),
    [
        (["--all"], ALL, False),
        (["--failed"], {"failed-000000000"}, False),
        (["--older-than", "5"], {"old-000000000000"}, False),
        (["--older-than", "2"], {"old-000000000000", "middle-000000000"}, False),
        # ~6 MiB in all; least recently used go first until at most 4 MiB are left
        (["--max-size", "4M"], {"old-000000000000", "middle-000000000"}, False),
        (["--max-size", "5.5M"], {"old-000000000000"}, False),
        (["--runs"], set(), True),
    ],
    ids=["all", "failed", "older-than-5", "older-than-2", "max-size-4M", "max-size-5.5M", "runs"],
)
def test_each_rule_removes_exactly_what_it_says(
    tmp_path: Path, rule: list[str], gone: set[str], runs_gone: bool
) -> None:
    cache = _sample_cache(tmp_path / "cache")
    assert _listed(cache) == {key[:12] for key in ALL}
    result = run_cli("cache", "clean", *rule, cache=cache)
    assert result.returncode == 0, result.stderr
    assert _keys(cache) == ALL - gone
    assert _listed(cache) == {key[:12] for key in ALL - gone}
    if gone:
        assert f"removed {len(gone)} cached build(s)" in result.stdout
    assert (cache.runs.exists()) is not runs_gone


def test_clean_all_skips_a_build_in_use(
    tmp_path: Path, debian_source, pristine: BuildResult
) -> None:
    """A verify holds its build (acquire); `cache clean --all` leaves it and says so."""
    cache = CacheLayout(tmp_path / "cache")
    shutil.copytree(pristine.entry.path, cache.builds / pristine.key, symlinks=True)
    _make_entry(cache, "unused-00000000000", age_days=1)
    builder = Builder(cache.builds, cache.locks)
    assert debian_source.default_ref
    request = BuildRequest(debian_source, debian_source.default_ref)
    with builder.acquire(request) as held:
        assert held.cache_hit and held.binary.is_relative_to(cache.builds)
        cleaned = run_cli("cache", "clean", "--all", cache=cache)
        assert cleaned.returncode == 0, cleaned.stderr
        assert "removed 1 cached build(s)" in cleaned.stdout
        assert f"skipped 1 build in use: {held.key[:12]} {held.describe}" in cleaned.stdout
        assert held.binary.is_file()
        usage = subprocess.run([str(held.binary), "-h"], capture_output=True, text=True)
        assert usage.returncode == 0 and usage.stdout.startswith("memcached 1.6")
        assert _keys(cache) == {held.key}
    after = run_cli("cache", "clean", "--all", cache=cache)  # released: now it goes
    assert after.returncode == 0 and "removed 1 cached build(s)" in after.stdout
    assert _keys(cache) == set() and not held.binary.exists()
    assert "skipped" not in after.stdout


def _clean_all(cache: CacheLayout) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "verifier", "cache", "clean", "--all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "VERIFIER_CACHE_DIR": str(cache.root)},
        cwd=ROOT,
    )


@pytest.mark.parametrize("round_", [1, 2])
def test_two_cleans_at_once_both_succeed(tmp_path: Path, round_: int) -> None:
    """Entries vanish under each clean while it works; neither may crash, the pinned one
    stays, and together they remove every other entry exactly once."""
    cache = CacheLayout(tmp_path / "cache")
    keys = {f"{n:020x}" for n in range(300)}
    for key in sorted(keys):
        _make_entry(cache, key, age_days=int(key, 16) % 7, files=12)
    pinned = min(keys)
    with file_lock(BuildCache(cache.builds, cache.locks).pin_path(pinned), shared=True):
        first, second = _clean_all(cache), _clean_all(cache)
        outputs = [proc.communicate(timeout=300) for proc in (first, second)]
    for proc, (out, err) in zip((first, second), outputs, strict=True):
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "internal error" not in err
        assert f"skipped 1 build in use: {pinned[:12]}" in out
    removed = [int(re.search(r"removed (\d+) cached", out)[1]) for out, _ in outputs]
    assert sum(removed) == len(keys) - 1
    assert _keys(cache) == {pinned}


def test_old_entries_without_the_new_fields_still_load(tmp_path: Path) -> None:
    """meta.json as an earlier verifier wrote it: no build_user, patches as plain dicts."""
    cache = CacheLayout(tmp_path / "cache")
    old = {
        "key": "0123456789abcdef0123",
        "commit": "f" * 40,
        "describe": "debian/1.6.18-1",
        "source": "debian:1.6.18-1",
        "patches": [{"name": "fix.diff", "sha256": "ab" * 32, "description": None}],
        "reverse": True,
        "patch_notes": ["fix.diff: reversed cleanly (git apply)"],
        "recipe": "memcached-1.5-1.6.toml",
        "toolchain": {"cc": "gcc 12", "cflags": "-O2", "cpu": "x"},
        "created": 1700000000.0,
        "phases": {"configure": 4.0, "make": 1.5},
        "build_seconds": 5.5,
        "status": "ok",
    }
    _make_entry(cache, old["key"], meta=old)
    entry = BuildCache(cache.builds).get(old["key"])
    assert entry is not None and entry.ok
    meta = entry.meta
    assert meta.patches == (PatchRecord("fix.diff", "ab" * 32, ""),)
    assert meta.reverse and meta.build_user == "" and meta.build_seconds == 5.5
    assert meta.status is BuildStatus.OK
    assert BuildMeta.from_json(meta.to_json()) == meta  # round trip
    assert meta.source == "debian:1.6.18-1"
    listed = run_cli("cache", "list", cache=cache)
    assert listed.returncode == 0, listed.stderr
    assert "0123456789ab" in listed.stdout and "fix.diff (reversed)" in listed.stdout


def test_unreadable_meta_is_not_an_entry(tmp_path: Path) -> None:
    cache = CacheLayout(tmp_path / "cache")
    path = _make_entry(cache, "broken-000000000")
    (path / "meta.json").write_text("[1, 2")
    assert list(BuildCache(cache.builds).entries()) == []
    assert run_cli("cache", "clean", "--all", cache=cache).returncode == 0
