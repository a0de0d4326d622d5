"""Sources that cannot be reached, and locks whose holder hangs: one line that says why.

Real git and apt-get against addresses that cannot answer (an .invalid host, a closed
port, a port that accepts and never replies); a real second process holding a lock.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.errors import BadInput, ExitStatus, NetworkError
from verifier.paths import CacheLayout
from verifier.source.git_source import GitSource
from verifier.source.network import reason, remote_failure
from verifier.util.locks import LockTimeout, file_lock, read_holder

from conftest import ROOT, run_cli

APT_LISTS = Path("/var/lib/apt/lists")


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error output holds exactly one 'error:' line and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("url", "because"),
    [
        ("https://nonexistent.invalid/memcached.git", "Could not resolve host"),
        ("http://127.0.0.1:1/x.git", "Failed to connect"),
    ],
    ids=["no-such-host", "connection-refused"],
)
def test_unreachable_repository_is_a_network_error_with_gits_reason(
    tmp_path: Path, url: str, because: str
) -> None:
    cache = CacheLayout(tmp_path / "cache")
    result = run_cli("build", "--repo", url, "--ref", "1.4.6", cache=cache, timeout=120)
    assert result.returncode == ExitStatus.NETWORK, result.stderr
    line = _one_error_line(result)
    assert f"cannot clone {url}: {because}" in line
    assert "--repo PATH" in line and "--source debian" in line
    assert not any(cache.mirrors.glob("*.partial"))  # nothing half-cloned is left


def test_a_path_that_is_not_a_repository_stays_bad_input(tmp_path: Path) -> None:
    not_a_repo = tmp_path / "plain-dir"
    not_a_repo.mkdir()
    result = run_cli(
        "build", "--repo", str(not_a_repo), "--ref", "1.4.6", cache=CacheLayout(tmp_path / "c")
    )
    assert result.returncode == ExitStatus.BAD_INPUT, result.stderr
    line = _one_error_line(result)
    assert "does not exist" in line and "--source debian" not in line  # git's reason, no hint


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port on 127.0.0.1 that completes the handshake and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/memcached.git"
    finally:
        listener.close()


def test_a_clone_that_never_answers_times_out(tmp_path: Path, silent_server: str) -> None:
    started = time.monotonic()
    result = run_cli(
        "build",
        "--repo",
        silent_server,
        "--ref",
        "1.4.6",
        cache=CacheLayout(tmp_path / "cache"),
        env={"VERIFIER_GIT_TIMEOUT": "3"},
        timeout=120,
    )
    assert result.returncode == ExitStatus.NETWORK, result.stderr
    line = _one_error_line(result)
    assert "no answer within 3 s" in line and "VERIFIER_GIT_TIMEOUT" in line
    assert time.monotonic() - started < 60  # bounded by the timeout, not by git's patience


@pytest.mark.skipif(
    not any(APT_LISTS.glob("*_source_Sources*")), reason="no deb-src lists (run ./bootstrap)"
)
def test_unreachable_debian_mirror_is_a_network_error(tmp_path: Path) -> None:
    """apt knows the package (real lists, copied) but its mirror is a closed port."""
    lists = tmp_path / "lists"
    (lists / "partial").mkdir(parents=True)
    for index in APT_LISTS.glob("*_source_Sources*"):
        release = index.name.split("_main_")[0] + "_InRelease"
        for name in (index.name, release):
            if (APT_LISTS / name).is_file():
                fake = "127.0.0.1:1_debian_dists_" + name.split("_dists_", 1)[1]
                shutil.copyfile(APT_LISTS / name, lists / fake)
    suites = sorted({p.name.split("_dists_")[1].split("_")[0] for p in lists.glob("*_Sources*")})
    (tmp_path / "parts").mkdir()
    (tmp_path / "sources.list").write_text(
        "".join(f"deb-src [trusted=yes] http://127.0.0.1:1/debian {s} main\n" for s in suites)
    )
    (tmp_path / "apt.conf").write_text(
        f'Dir::Etc::sourcelist "{tmp_path}/sources.list";\n'
        f'Dir::Etc::sourceparts "{tmp_path}/parts";\nDir::State::lists "{lists}";\n'
    )
    result = run_cli(
        "build",
        "--source",
        "debian",
        cache=CacheLayout(tmp_path / "cache"),
        env={"APT_CONFIG": str(tmp_path / "apt.conf")},
        timeout=180,
    )
    assert result.returncode == ExitStatus.NETWORK, result.stderr
    line = _one_error_line(result)
    assert "apt-get source" in line and "127.0.0.1" in line
    assert "Could not connect" in line or "Connection refused" in line


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from verifier.util.locks import file_lock
    with file_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


@pytest.fixture
def lock_holder() -> Iterator:  # type: ignore[type-arg]
    """hold(path, seconds) -> Popen of another process holding ``path``; stopped after."""
    started: list[subprocess.Popen[str]] = []

    def hold(path: Path, seconds: float = 120) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    try:
        yield hold
    finally:
        for proc in started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_a_hung_mirror_lock_holder_is_named(tmp_path: Path, debian_source, lock_holder) -> None:
    """Another process holds the mirror's lock (as a clone that hangs would); the next run
    waits VERIFIER_LOCK_TIMEOUT, then says who holds it, in one line."""
    cache = CacheLayout(tmp_path / "cache")
    origin = str(debian_source.git.path)
    holder = lock_holder(GitSource(origin, cache.mirrors).lock_path)
    started = time.monotonic()
    result = run_cli(
        "build",
        "--repo",
        origin,
        "--ref",
        "1.6.18",
        cache=cache,
        env={"VERIFIER_LOCK_TIMEOUT": "2"},
    )
    waited = time.monotonic() - started
    assert result.returncode == ExitStatus.HARNESS_ERROR, result.stderr
    line = _one_error_line(result)
    assert f"another verifier (pid {holder.pid}: python" in line and " -c " in line
    assert "has held" in line and "VERIFIER_LOCK_TIMEOUT" in line
    assert waited < 60


def test_lock_waiter_times_out_naming_the_holder(tmp_path: Path, lock_holder) -> None:
    path = tmp_path / "locks" / "x.lock"
    holder = lock_holder(path)
    recorded = read_holder(path)
    assert recorded is not None and recorded.pid == holder.pid
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught, file_lock(path, timeout_s=0.5):
        pass
    assert 0.5 <= time.monotonic() - started < 5
    assert f"pid {holder.pid}" in caught.value.message
    holder.kill()
    holder.wait(timeout=10)
    with file_lock(path, timeout_s=5):  # the holder died: its flock went with it
        assert read_holder(path) is not None and read_holder(path).pid == os.getpid()
    assert read_holder(path) is None  # released: no stale holder left in the file


def test_shared_locks_coexist_and_exclude_an_exclusive_one(tmp_path: Path) -> None:
    path = tmp_path / "pin.lock"
    with (
        file_lock(path, shared=True),
        file_lock(path, shared=True, timeout_s=0.2),
        pytest.raises(LockTimeout),
        file_lock(path, timeout_s=0.2),
    ):
        pass
    with file_lock(path, timeout_s=0.2):
        pass


def test_unlinking_a_held_lock_never_lets_two_hold_it(tmp_path: Path) -> None:
    """A waiter that wins the old, unlinked file tries again on the new one."""
    path = tmp_path / "pin.lock"
    with file_lock(path) as held:
        old_inode = path.stat().st_ino
        held.unlink()
        assert not path.exists()
        with file_lock(path, timeout_s=1):  # a new file: free
            assert path.stat().st_ino != old_inode
            with pytest.raises(LockTimeout), file_lock(path, timeout_s=0.2):
                pass


@pytest.mark.parametrize(
    ("output", "kind", "text"),
    [
        (
            "Cloning into bare repository 'x'...\nfatal: unable to access "
            "'https://h.invalid/m.git/': Could not resolve host: h.invalid\n",
            NetworkError,
            "Could not resolve host: h.invalid",
        ),
        (
            "fatal: unable to access 'http://127.0.0.1:1/x.git/': Failed to connect to "
            "127.0.0.1 port 1 after 0 ms: Couldn't connect to server\n",
            NetworkError,
            "Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server",
        ),
        (
            "ssh: Could not resolve hostname example.invalid: Name or service not known\n"
            "fatal: Could not read from remote repository.\n",
            NetworkError,
            "Could not read from remote repository.",
        ),
        (
            "remote: Repository not found.\nfatal: repository 'https://github.com/a/b.git/' "
            "not found\n",
            BadInput,
            "repository 'https://github.com/a/b.git/' not found",
        ),
        (
            "E: Failed to fetch http://127.0.0.1:1/debian/pool/m.dsc  Could not connect to "
            "127.0.0.1:1 (127.0.0.1). - connect (111: Connection refused)\n"
            "E: Failed to fetch http://127.0.0.1:1/debian/pool/m.tar.xz  Unable to connect\n"
            "E: Failed to fetch some archives.\n",
            NetworkError,
            "Could not connect to 127.0.0.1:1 (127.0.0.1). - connect (111: Connection refused)",
        ),
    ],
    ids=["dns", "refused", "ssh", "not-found", "apt"],
)
def test_remote_failure_keeps_the_tools_reason(output: str, kind: type, text: str) -> None:
    error = remote_failure("cannot clone X", output)
    assert type(error) is kind
    assert reason(output) == text
    assert error.message.startswith(f"cannot clone X: {text}")
