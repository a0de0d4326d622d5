"""Shared fixtures: one cache per test session, real builds of Debian's memcached, and a
guard that fails any test leaving a server, flood worker or gdb behind.

The guard sees every such process the verifier starts, in this process or in a CLI
subprocess, wherever it ends up (an orphan reparented to init too): the verifier logs each
one's pid and start time to ``$VERIFIER_PID_LOG``, which the session sets."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.build.builder import Builder, BuildRequest, BuildResult
from verifier.paths import CacheLayout
from verifier.source.select import SourceChoice, choose_source
from verifier.util import pidlog

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "patches"
PATCHES = ROOT / "patches"
RACE_FIXTURE = FIXTURES / "reintroduce-maxconns-race.diff"
CRASH_FIXTURE = FIXTURES / "abort-under-load.diff"
LOCK_ORDER_INVERSION = FIXTURES / "lock-order-inversion.diff"
MAXCONNS_FIX = PATCHES / "maxconns-fix.diff"
LOST_WAKEUP_FIX = PATCHES / "listener-lost-wakeup-fix.diff"


def _children_named(name: str) -> list[int]:
    """Processes called ``name`` whose parent is this test process (or its descendants)."""
    mine = {os.getpid()}
    found: list[int] = []
    procs: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        procs[int(entry.name)] = (ppid, comm)
    changed = True
    while changed:  # descendants of this process
        changed = False
        for pid, (ppid, _) in procs.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    for pid in mine:
        if pid != os.getpid() and procs.get(pid, (0, ""))[1] == name:
            found.append(pid)
    return found


@pytest.fixture(scope="session", autouse=True)
def pid_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every server, flood worker and gdb the verifier starts in this session is logged here
    (CLI subprocesses inherit the variable)."""
    path = tmp_path_factory.mktemp("pids") / "started.log"
    previous = os.environ.get(pidlog.PID_LOG_ENV)
    os.environ[pidlog.PID_LOG_ENV] = str(path)
    yield path
    if previous is None:
        os.environ.pop(pidlog.PID_LOG_ENV, None)
    else:
        os.environ[pidlog.PID_LOG_ENV] = previous


def logged_so_far() -> int:
    """How many processes the verifier has logged in this session (a mark for later)."""
    return len(pidlog.read(Path(os.environ[pidlog.PID_LOG_ENV])))


def wait_logged(role: str, since: int, timeout_s: float = 120.0) -> pidlog.Logged:
    """The first process of ``role`` (e.g. "flood worker") the verifier started after the
    mark ``since``: for tests that signal a run once it floods."""
    path = Path(os.environ[pidlog.PID_LOG_ENV])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [p for p in pidlog.read(path)[since:] if p.role == role]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {role} started within {timeout_s} s")


@pytest.fixture(autouse=True)
def no_leftover_processes(pid_log: Path) -> Iterator[None]:
    """Every test must stop what it starts: a process it left running fails it (and is
    killed), whether it is still our child or was orphaned to init."""
    seen = len(pidlog.read(pid_log))
    yield
    deadline = time.monotonic() + 5.0
    while True:
        logged = [p for p in pidlog.read(pid_log)[seen:] if p.alive()]
        children = [
            pid for pid in _children_named("memcached") if pid not in {p.pid for p in logged}
        ]
        if not (logged or children) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid in [p.pid for p in logged] + children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    left = [f"{p.role} {p.pid}" for p in logged] + [f"memcached {pid}" for pid in children]
    assert not left, f"test left processes running: {', '.join(left)}"


@pytest.fixture(scope="session")
def cache_layout(tmp_path_factory: pytest.TempPathFactory) -> CacheLayout:
    """One cache per session (builds are shared); VERIFIER_TEST_CACHE reuses one across runs."""
    given = os.environ.get("VERIFIER_TEST_CACHE")
    root = Path(given) if given else tmp_path_factory.mktemp("verifier-cache")
    return CacheLayout(root)


@pytest.fixture(scope="session")
def debian_source(cache_layout: CacheLayout) -> SourceChoice:
    """Debian's memcached source, imported once (needs the deb-src entry ./bootstrap adds)."""
    return choose_source(None, "debian", cache_layout)


@pytest.fixture(scope="session")
def builder(cache_layout: CacheLayout) -> Builder:
    return Builder(cache_layout.builds, cache_layout.locks)


@pytest.fixture(scope="session")
def build_debian(builder: Builder, debian_source: SourceChoice):  # type: ignore[no-untyped-def]
    """build_debian(*patches, reverse=False) -> BuildResult (cached for the session)."""

    def build(*patches: Path, reverse: bool = False) -> BuildResult:
        assert debian_source.default_ref
        return builder.build(
            BuildRequest(debian_source, debian_source.default_ref, tuple(patches), reverse)
        )

    return build


@pytest.fixture(scope="session")
def pristine(build_debian) -> BuildResult:  # type: ignore[no-untyped-def]
    return build_debian()


def run_cli(
    *args: str, cache: CacheLayout, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The installed CLI, as a user runs it (a separate process)."""
    full_env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache.root), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "verifier", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )
