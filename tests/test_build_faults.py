"""Faults of the build stage: untrusted patches never built as root, and a build killed
from outside never cached as a failure.

Real builds of Debian's memcached; the patch that watches who runs the build is generated
here against the imported tree (no third-party code is committed).
"""

from __future__ import annotations

import difflib
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.build.builder import (
    Builder,
    BuildRequest,
    FailureCause,
    classify_step,
)
from verifier.build.cache import BuildCache, BuildStatus
from verifier.build.isolation import BuildUser, can_reach
from verifier.errors import BuildFailed, ExitStatus
from verifier.paths import CacheLayout
from verifier.source.select import SourceChoice, choose_source
from verifier.util.proc import CommandResult

from conftest import FIXTURES, ROOT, run_cli

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="build-user isolation applies to root")


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A fresh directory any user can traverse (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="verifier-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_cache(tmp_path: Path, cache_layout: CacheLayout, debian_source) -> CacheLayout:
    """An empty build cache that shares the session's Debian import (copied: no download)."""
    cache = CacheLayout(tmp_path / "cache")
    shutil.copytree(cache_layout.debian, cache.debian, symlinks=True)
    return cache


def _who_runs_configure_patch(source: SourceChoice, tag: str, path: Path) -> Path:
    """A patch making ./configure print who runs it, who owns the patched file (whoever
    applied the patch) and who owns HOME."""
    assert source.default_ref
    original = source.git.repo.git.show(f"{source.default_ref}:configure") + "\n"
    lines = original.splitlines(keepends=True)
    probe = (
        f'echo "{tag}: uid=$(id -u) patched_by=$(stat -c %u "$0") '
        f'home=$HOME home_owner=$(stat -c %u "$HOME")"\n'
    )
    diff = difflib.unified_diff(lines, [lines[0], probe, *lines[1:]], "a/configure", "b/configure")
    path.write_text("".join(diff))
    return path


def _ccache_counts(ccache_dir: Path, user: BuildUser) -> dict[str, int]:
    stats = subprocess.run(
        ["ccache", "--print-stats"],
        env={**os.environ, "CCACHE_DIR": str(ccache_dir)},
        user=user.uid,
        group=user.gid,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {k: int(v) for k, v in (line.split("\t") for line in stats.splitlines() if "\t" in line)}


@AS_ROOT
def test_build_steps_run_as_the_build_user_with_its_own_ccache(
    tmp_path: Path, debian_source: SourceChoice, reachable_dir: Path
) -> None:
    """As root, configure (changed by the patch under test) runs as nobody, the patch was
    applied by nobody, HOME is nobody's; root owns the cached result; nobody's ccache
    serves the next build of a new key."""
    nobody = BuildUser.lookup("nobody")
    builder = Builder(tmp_path / "builds", tmp_path / "locks", ccache_root=reachable_dir)
    assert debian_source.default_ref
    first_patch = _who_runs_configure_patch(debian_source, "who-1", tmp_path / "who-1.diff")
    first = builder.build(BuildRequest(debian_source, debian_source.default_ref, (first_patch,)))
    assert not first.cache_hit
    log = first.entry.log.read_text()
    seen = re.search(r"who-1: uid=(\d+) patched_by=(\d+) home=(\S+) home_owner=(\d+)", log)
    assert seen, log[:2000]
    uid, patched_by, home, home_owner = int(seen[1]), int(seen[2]), seen[3], int(seen[4])
    assert uid == nobody.uid != 0
    assert patched_by == nobody.uid  # git apply / patch ran as nobody too
    assert home_owner == nobody.uid and home != pwd.getpwuid(0).pw_dir
    assert first.build_user == "nobody" and first.meta.build_user == "nobody"
    binary = first.binary.stat()
    assert binary.st_uid == 0 and not binary.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    assert not binary.st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert not (first.entry.tree / ".git").exists()  # its config was writable by the build
    usage = subprocess.run([str(first.binary), "-h"], capture_output=True, text=True)
    assert usage.returncode == 0 and usage.stdout.startswith("memcached 1.6")

    ccache_dir = reachable_dir / "nobody"
    assert ccache_dir.stat().st_uid == nobody.uid
    cold = _ccache_counts(ccache_dir, nobody)
    cold_hits = cold["direct_cache_hit"] + cold["preprocessed_cache_hit"]
    assert cold["cache_miss"] > 10 and cold_hits < cold["cache_miss"]  # a fresh ccache

    second_patch = _who_runs_configure_patch(debian_source, "who-2", tmp_path / "who-2.diff")
    second = builder.build(BuildRequest(debian_source, debian_source.default_ref, (second_patch,)))
    assert not second.cache_hit and second.key != first.key
    assert f"who-2: uid={nobody.uid} " in second.entry.log.read_text()
    warm = _ccache_counts(ccache_dir, nobody)
    new_hits = warm["direct_cache_hit"] + warm["preprocessed_cache_hit"] - cold_hits
    assert new_hits >= 10, warm  # the new key's object files came from nobody's ccache


@AS_ROOT
def test_a_missing_build_user_is_a_clear_error(cache_layout: CacheLayout, pristine) -> None:
    for args, env in (
        (["--build-user", "no-such-user-xyz"], {}),
        ([], {"VERIFIER_BUILD_USER": "no-such-user-xyz"}),
    ):
        result = run_cli("build", "--source", "debian", *args, cache=cache_layout, env=env)
        assert result.returncode == ExitStatus.ENV_MISSING, result.stderr
        line = _one_error_line(result)
        assert "build user 'no-such-user-xyz' does not exist" in line


def test_reachability_follows_the_mode_bits(reachable_dir: Path) -> None:
    nobody = BuildUser.lookup("nobody")
    closed = reachable_dir / "closed"
    closed.mkdir()
    closed.chmod(0o700)
    assert can_reach(reachable_dir / "not-yet-made", nobody)
    assert not can_reach(closed / "inner", nobody)
    closed.chmod(0o701)  # others may pass through
    assert can_reach(closed / "inner", nobody)


def _recipes_whose_make_dies_without(flag: Path, into: Path) -> Path:
    """The shipped recipes, with the 1.5-1.6 make step killing itself (SIGKILL, as the OOM
    killer would) unless ``flag`` exists."""
    shutil.copytree(ROOT / "recipes", into)
    recipe = into / "build" / "memcached-1.5-1.6.toml"
    text = recipe.read_text()
    targets = 'targets = ["memcached"]\n'
    assert targets in text
    step = f"test -e {flag} || kill -KILL $$; exec {{make}} -j{{jobs}} memcached"
    recipe.write_text(text.replace(targets, f'{targets}make = [["sh", "-c", "{step}"]]\n', 1))
    return into


def test_a_killed_build_is_not_cached_and_the_next_run_builds(
    private_cache: CacheLayout, reachable_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = reachable_dir / "make-may-live"
    recipes = _recipes_whose_make_dies_without(flag, private_cache.root.parent / "recipes")
    monkeypatch.setenv("VERIFIER_RECIPES_DIR", str(recipes))
    env = {"VERIFIER_RECIPES_DIR": str(recipes)}

    first = run_cli("build", "--source", "debian", cache=private_cache, env=env)
    assert first.returncode == ExitStatus.BUILD_FAILED, first.stderr
    line = _one_error_line(first)
    assert "killed by a signal in step make: transient, not cached" in line
    assert not list(BuildCache(private_cache.builds).entries())  # no entry: nothing to skip
    kept_log = Path(line.split("log: ", 1)[1].strip())
    assert "step make killed by a signal (exit -9)" in kept_log.read_text()

    # the library says so too: bisect can tell "retry" from "does not build"
    source = choose_source(None, "debian", private_cache)
    assert source.default_ref
    builder = Builder(private_cache.builds, private_cache.locks)
    with pytest.raises(BuildFailed) as caught:
        builder.build(BuildRequest(source, source.default_ref))
    assert caught.value.transient
    assert not list(BuildCache(private_cache.builds).entries())

    flag.touch()
    second = run_cli("build", "--source", "debian", cache=private_cache, env=env)
    assert second.returncode == 0, second.stderr  # no --rebuild needed
    assert "built in" in second.stderr and "cache hit" not in second.stderr
    assert Path(second.stdout.strip()).is_file()
    third = run_cli("build", "--source", "debian", cache=private_cache, env=env)
    assert third.returncode == 0 and "cache hit" in third.stderr


def test_a_real_compile_error_is_still_cached(cache_layout: CacheLayout, pristine) -> None:
    args = ("build", "--source", "debian", "--patch", str(FIXTURES / "break-build.diff"))
    first = run_cli(*args, cache=cache_layout)
    second = run_cli(*args, cache=cache_layout)
    for result in (first, second):
        assert result.returncode == ExitStatus.BUILD_FAILED, result.stderr
        assert "transient" not in _one_error_line(result)
    assert "cached result; --rebuild retries" in _one_error_line(second)
    key = Path(_one_error_line(second).split("log: ", 1)[1].strip()).parent.name
    entry = BuildCache(cache_layout.builds).get(key)
    assert entry is not None and entry.meta.status is BuildStatus.FAILED


def _result(returncode: int, output: str = "", timed_out: bool = False) -> CommandResult:
    return CommandResult(("make",), returncode, output, timed_out)


@pytest.mark.parametrize(
    ("result", "cause"),
    [
        (_result(0), None),
        (
            _result(2, "memcached.c:12: error: expected ';'\nmake: *** [Makefile:9: a.o] Error 1"),
            FailureCause.COMPILE,
        ),
        (_result(1, "configure: error: libevent is required"), FailureCause.COMPILE),
        (_result(-9), FailureCause.SIGNAL),
        (_result(-15, "", timed_out=True), FailureCause.TIMEOUT),
        (
            _result(2, "gcc: fatal error: Killed signal terminated program cc1"),
            FailureCause.OUT_OF_MEMORY,
        ),
        (
            _result(2, "x.c:1: internal compiler error: Killed (program cc1)"),
            FailureCause.OUT_OF_MEMORY,
        ),
        (
            _result(2, "/usr/bin/ld: final link failed: No space left on device"),
            FailureCause.NO_SPACE,
        ),
        (_result(2, "make: *** [Makefile:800: memcached-items.o] Killed"), FailureCause.SIGNAL),
        (_result(137), FailureCause.SIGNAL),
    ],
    ids=[
        "ok",
        "compile",
        "configure",
        "sigkill",
        "timeout",
        "oom-cc1",
        "ice-killed",
        "enospc",
        "make-killed",
        "shell-137",
    ],
)
def test_failure_causes(result: CommandResult, cause: FailureCause | None) -> None:
    assert classify_step(result) == cause
    if cause is not None:
        assert cause.transient is (cause not in (FailureCause.COMPILE, FailureCause.NO_BINARY))
