"""The embedded connection-churn flood against a real memcached.

The memcached binary is $VERIFIER_TEST_MEMCACHED, else the session's Debian build (conftest).
Every server is started per test in its own process group and killed by pid in teardown.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.stress import Flood, FloodConfig, FloodConfigError, FloodStats, render_progress
from verifier.stress.workload import MAXCONNS, OK, SERVER_ERROR, build_schedule, classify_reply
from verifier.util import pidlog
from verifier.util.proc import die_with_parent

pytestmark = pytest.mark.timeout(120)


# -- memcached helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def memcached_bin(request: pytest.FixtureRequest) -> str:
    """$VERIFIER_TEST_MEMCACHED if set (no build needed), else the session's Debian build."""
    path = os.environ.get("VERIFIER_TEST_MEMCACHED")
    if not path:
        return str(request.getfixturevalue("pristine").binary)
    if not os.access(path, os.X_OK):  # a typo must not quietly skip the flood tests
        pytest.fail(f"VERIFIER_TEST_MEMCACHED={path} is not an executable")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_stats(port: int, timeout_s: float = 5.0) -> dict[str, str]:
    """memcached `stats` over a plain socket (retries while the server does not accept)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
                s.sendall(b"stats\r\n")
                buf = b""
                while not buf.endswith(b"END\r\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed during stats")
                    buf += chunk
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return {
        parts[1].decode(): parts[2].decode()
        for parts in (line.split(b" ", 2) for line in buf.splitlines())
        if parts[0] == b"STAT"
    }


@contextlib.contextmanager
def running_memcached(
    binary: str, *, conns: int, extra: tuple[str, ...] = (), nofile: int | None = None
) -> Iterator[int]:
    """A memcached on a free loopback port; yields the port, kills the process group after."""
    port = _free_port()

    def preexec() -> None:
        die_with_parent()
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "2", "-c", str(conns)]
    proc = subprocess.Popen(
        [*argv, "-u", "nobody", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # EMFILE runs print "accept4(): Too many open files" a lot
        start_new_session=True,
        preexec_fn=preexec,
    )
    pidlog.record(proc.pid, "memcached (test)")
    try:
        server_stats(port, timeout_s=5.0)  # up and answering
        assert proc.poll() is None, "memcached exited at startup"
        yield port
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture
def healthy_port(memcached_bin: str) -> Iterator[int]:
    with running_memcached(memcached_bin, conns=4096) as port:
        yield port


def _gone(pid: int) -> bool:
    """No such process, or only a zombie left for init to reap."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _assert_no_children(flood: Flood) -> None:
    assert flood.pids
    assert all(_gone(pid) for pid in flood.pids), flood.pids
    assert not [p for p in multiprocessing.active_children() if p.pid in flood.pids]


# -- no server needed ---------------------------------------------------------------------


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.5", "example.com", "0.0.0.0", ""])
def test_non_loopback_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError):
        FloodConfig(host=host)
    with pytest.raises(FloodConfigError):
        FloodConfig(host=host)


def test_config_validation() -> None:
    assert FloodConfig(host="::1").host == "::1"
    assert FloodConfig(host="127.0.0.2").host == "127.0.0.2"
    for bad in (
        {"mix": (("delete", 1.0),)},
        {"mix": ()},
        {"concurrency": 0},
        {"max_cycles": 0},
        {"duration_s": 0},
        {"connect_timeout_s": -1},
        {"port": 70000},
    ):
        with pytest.raises(ValueError):
            FloodConfig(**bad)  # type: ignore[arg-type]
    cfg = FloodConfig(concurrency=5, processes=2, max_cycles=7)
    assert [cfg.share(i) for i in range(cfg.process_count)] == [(3, 4), (2, 3)]
    assert FloodConfig(concurrency=1, processes=4).process_count == 1


def test_reply_classification() -> None:
    assert classify_reply(b"END\r\n", True) == OK
    assert classify_reply(b"VALUE vk:1 0 3\r\nxxx\r\nEND\r\n", True) == OK
    assert classify_reply(b"VALUE vk:1 0 3\r\nxxx\r\n", True) is None
    assert classify_reply(b"STAT pid 1\r\nSTAT uptime 2\r\n", True) is None
    assert classify_reply(b"STORED\r\n", False) == OK
    assert classify_reply(b"STOR", False) is None
    assert classify_reply(b"ERROR Too many open connections\r\n", True) == MAXCONNS
    assert classify_reply(b"ERROR Too many open connections\r\n", False) == MAXCONNS
    assert classify_reply(b"SERVER_ERROR out of memory\r\n", False) == SERVER_ERROR
    assert classify_reply(b"ERROR\r\n", True) == SERVER_ERROR
    assert classify_reply(b"ERROR Too many", True) is None
    import random

    schedule = build_schedule(
        (("get", 1.0), ("set", 1.0)), key_space=10, value_size=4, rng=random.Random(1)
    )
    assert {req.split(b" ")[0] for req, _ in schedule} == {b"get", b"set"}
    assert all(req.endswith(b"\r\n") for req, _ in schedule)


# -- against memcached --------------------------------------------------------------------


def test_counts_match_server_side(healthy_port: int) -> None:
    before = server_stats(healthy_port)
    cfg = FloodConfig(
        port=healthy_port,
        concurrency=200,
        processes=2,
        duration_s=2.5,
        mix=(("get", 0.7), ("set", 0.3)),
    )
    with Flood(cfg) as flood:
        assert flood.wait(timeout_s=15)
        final = flood.stop()
    after = server_stats(healthy_port)
    _assert_no_children(flood)

    assert final.cycles > 1000
    assert final.errors.total == 0, final.errors
    assert final.finished and final.cycles == final.ops
    assert final.processes_failed == 0 and final.open_connections == 0
    assert 2.4 <= final.active_s <= 4.0
    server_conns = int(after["total_connections"]) - int(before["total_connections"]) - 1
    # connects cut short by the final drain may reach the server uncounted by the client
    print(f"client connects {final.connects}, server accepted {server_conns}")
    assert final.connects <= server_conns <= final.connects + cfg.concurrency, (
        server_conns,
        final.connects,
    )
    server_ops = sum(int(after[k]) - int(before[k]) for k in ("cmd_get", "cmd_set"))
    # ops cut short by the final drain reached the server but were not counted by the client
    assert final.ops <= server_ops <= final.ops + cfg.concurrency, (server_ops, final.ops)
    assert final.bytes_sent > 0 and final.bytes_received > 0
    line = render_progress(final)
    assert "cycles" in line and "errors: none" in line and "[done]" in line


def test_pause_drains_and_resume_continues(healthy_port: int) -> None:
    cfg = FloodConfig(port=healthy_port, concurrency=300, processes=2, duration_s=30)
    with Flood(cfg) as flood:
        time.sleep(0.8)
        assert flood.snapshot().open_connections > 0
        t0 = time.monotonic()
        assert flood.pause(drain_timeout_s=3.0)
        assert time.monotonic() - t0 < 1.0
        paused = flood.snapshot()
        assert paused.paused and paused.open_connections == 0 and flood.running
        curr = 99
        for _ in range(20):  # the server handles the resets asynchronously
            curr = int(server_stats(healthy_port)["curr_connections"])
            if curr <= 2:
                break
            time.sleep(0.1)
        assert curr <= 2
        time.sleep(1.0)
        assert flood.snapshot().cycles == paused.cycles  # nothing while paused
        flood.resume()
        time.sleep(0.8)
        resumed = flood.snapshot()
        assert not resumed.paused and resumed.cycles > paused.cycles + 500
        final = flood.stop()
    assert final.errors.total == 0 and final.processes_failed == 0
    assert final.active_s < final.elapsed_s - 0.6  # the pause (over 1 s) did not count
    _assert_no_children(flood)


def test_bounds_stop_the_flood(healthy_port: int) -> None:
    by_cycles = Flood(FloodConfig(port=healthy_port, concurrency=50, processes=2, max_cycles=3001))
    with by_cycles:
        assert by_cycles.wait(timeout_s=20)
        assert not by_cycles.running
        stats = by_cycles.snapshot()
    assert stats.cycles == 3001 and stats.finished
    _assert_no_children(by_cycles)

    by_time = Flood(FloodConfig(port=healthy_port, concurrency=50, processes=1, duration_s=1.0))
    with by_time:
        assert by_time.wait(timeout_s=10)
        stats = by_time.snapshot()
    assert 1.0 <= stats.active_s < 1.5 and stats.elapsed_s < 3.0 and stats.cycles > 0
    _assert_no_children(by_time)


def test_spawn_and_plain_asyncio(healthy_port: int) -> None:
    cfg = FloodConfig(
        port=healthy_port,
        concurrency=20,
        processes=1,
        max_cycles=500,
        start_method="spawn",
        use_uvloop=False,
        linger_rst=False,
        ops_per_connection=3,
    )
    with Flood(cfg) as flood:
        assert flood.wait(timeout_s=30)
    stats = flood.stop()
    assert stats.cycles == 500 and stats.ops == 1500 and not stats.uvloop
    _assert_no_children(flood)


def test_exception_in_parent_stops_children(healthy_port: int) -> None:
    flood = Flood(FloodConfig(port=healthy_port, concurrency=20, processes=2, duration_s=30))
    with pytest.raises(RuntimeError, match="boom"), flood:
        assert flood.running
        raise RuntimeError("boom")
    assert not flood.running
    _assert_no_children(flood)
    with pytest.raises(RuntimeError):
        flood.start()  # once only


def test_children_die_with_parent(healthy_port: int) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, time
        from verifier.stress import Flood, FloodConfig
        flood = Flood(FloodConfig(port={healthy_port}, concurrency=10, duration_s=30))
        flood.start()
        print(*flood.pids, flush=True)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    ).stdout
    pids = [int(p) for p in out.split()]
    assert pids
    deadline = time.monotonic() + 5
    while not all(_gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            for pid in pids:  # do not leave them behind even if the test fails
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            pytest.fail(f"flood children {pids} outlived their parent")
        time.sleep(0.05)


def test_emfile_flood(memcached_bin: str) -> None:
    """-c 64 with RLIMIT_NOFILE 64 and no maxconns_fast: accept() hits EMFILE."""
    with running_memcached(
        memcached_bin, conns=64, nofile=64, extra=("-o", "no_maxconns_fast")
    ) as port:
        cfg = FloodConfig(
            port=port,
            concurrency=400,
            duration_s=4.0,
            connect_timeout_s=0.5,
            reply_timeout_s=0.5,
        )
        progress: list[FloodStats] = []
        with Flood(cfg) as flood:
            while flood.running:
                time.sleep(0.5)
                progress.append(flood.snapshot())
            final = flood.stop()
        _assert_no_children(flood)
        after = server_stats(port)

    assert int(after["listen_disabled_num"]) > 0, after
    assert final.processes_failed == 0 and final.cycles > 1000 and final.ops > 0
    errors = final.errors
    assert errors.connect_timeout + errors.reply_timeout > 0, errors
    assert errors.total == final.cycles - final.ops, errors  # one outcome per cycle
    assert any("connect_timeout" in s.render() or "reply_timeout" in s.render() for s in progress)
