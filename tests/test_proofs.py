"""Proofs beyond cycles: a leaked lock and a spinning thread, proven from the live process.

On a small C program (tests/fixtures/c/leak.c) and on real memcached builds: memcached's
own ``watch`` limit leak reintroduced (tests/fixtures/patches/reintroduce-watch-lock-leak
.diff), a worker spinning on one command (spin-on-command.diff), and pristine 1.6.18 under
the same steps and under a heavy flood, which must never be proven leaked or spinning.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_waitfor import _held_stats, _server_config, c_programs, running

from verifier.evidence.collect import build_symbols
from verifier.evidence.leaked_lock import (
    CONDVAR_MIN_HOLD_S,
    LeakProof,
    condvar_waits,
    find_leaked_lock,
)
from verifier.evidence.spin import SpinProof, find_spin
from verifier.evidence.symtab import SymbolTable
from verifier.evidence.waitfor import find_deadlock, warm_up
from verifier.probe.telnet import TelnetSession
from verifier.records.trial import TrialResult
from verifier.run.proofs import Prover, hold_bound
from verifier.run.server import HOST, MemcachedServer
from verifier.run.trial import TrialSettings, _Soak
from verifier.stress import Flood, FloodConfig
from verifier.vocabulary import HangClass, HangProof, TrialOutcome

from conftest import FIXTURES

__all__ = ["c_programs"]  # the fixture, imported to be found

WATCH_LEAK = FIXTURES / "reintroduce-watch-lock-leak.diff"
SPIN = FIXTURES / "spin-on-command.diff"
WATCHER_LIMIT = 20  # logger.c


def _until(check: Callable[[], object], timeout_s: float = 10.0) -> object:
    """``check()`` until it returns something true (threads may still be on their way)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _proven_leak(pid: int) -> LeakProof | None:
    proof = find_leaked_lock(pid)
    return proof if proof.proven else None


def test_leaked_lock_in_a_c_program(c_programs: Callable[[str], Path]) -> None:
    """A thread takes leak_lock, returns to read() without unlocking; two wait for it."""
    binary = c_programs("leak")
    with running([str(binary)], "ready") as (proc, tids):
        assert find_deadlock(proc.pid).cycle() is None  # no cycle: the graph alone says nothing
        assert build_symbols(proc.pid) == frozenset()  # no timer, no flag: named by no sentence
        proof = _until(lambda: _proven_leak(proc.pid))
        assert isinstance(proof, LeakProof), "leak not proven"
        (leak,) = proof.leaks
        assert leak.lock == "leak_lock"
        assert (leak.owner, leak.owner_name) == (int(tids["leaker"]), "leaker")
        assert (leak.sleeps_in, leak.owner_code) == ("read", "run")
        assert {tid for tid, _ in leak.waiters} == {int(tids["waiter-1"]), int(tids["waiter-2"])}
        assert leak.held_s >= proof.hold_s
        # the condition variable nobody signals is evidence, named, not an edge
        line = f"thread {tids['idle']} (idle) waits on condition variable idle_cond"
        assert proof.condvar_waits == [line]
        assert condvar_waits(proc.pid) == [line]  # what a hang's evidence keeps


def test_every_leaked_lock_of_a_program_is_named(c_programs: Callable[[str], Path]) -> None:
    """no_cycle.c: two owners asleep holding a mutex one thread waits for (one of them a
    condition variable's waiter re-taking its mutex); the other futex waits (condvar,
    semaphore, barrier, rwlock, stdio lock) are no leak."""
    binary = c_programs("no_cycle")
    with running([str(binary)], "ready") as (proc, tids):

        def two() -> LeakProof | None:
            proof = find_leaked_lock(proc.pid)
            return proof if len(proof.leaks) == 2 else None

        proof = _until(two)
        assert isinstance(proof, LeakProof), "leaks not proven"
        assert {(leak.lock, leak.owner, leak.waiters) for leak in proof.leaks} == {
            ("held_lock", int(tids["sleeper"]), ((int(tids["blocked"]), "blocked"),)),
            ("relock_mutex", int(tids["signaller"]), ((int(tids["relock"]), "relock"),)),
        }
        assert all(leak.sleeps_in.endswith("nanosleep") for leak in proof.leaks)  # sleep()


def test_a_pause_that_holds_a_lock_while_it_waits_is_no_leak(
    c_programs: Callable[[str], Path],
) -> None:
    """pause_threads() keeps a mutex across a condition-variable wait for a worker: a worker
    busy for 1.5 s is slow, not a leak (seen on 1.6.23 before: a leak "proven" in 305 ms)."""
    binary = c_programs("pause_hold")
    with running([str(binary), "1500"], "ready") as (proc, _):
        notes: list[str] = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            proof = find_leaked_lock(proc.pid)
            assert not proof.proven, [leak.describe() for leak in proof.leaks]
            notes += proof.notes
        # the pause was seen as a candidate and outlasted, not missed
        assert any("condition variable moved" in note for note in notes), notes


def test_a_pause_that_never_ends_is_a_leaked_lock_after_3_s(
    c_programs: Callable[[str], Path],
) -> None:
    binary = c_programs("pause_hold")
    with running([str(binary), "0"], "ready") as (proc, tids):
        proof = _until(lambda: _proven_leak(proc.pid))
        assert isinstance(proof, LeakProof), "leak not proven"
        (leak,) = proof.leaks
        assert (leak.lock, leak.owner) == ("maint_lock", int(tids["pauser"]))
        assert "init_cond" in leak.sleeps_in
        assert leak.held_s >= CONDVAR_MIN_HOLD_S


@pytest.fixture
def sessions() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _watch(port: int, opened: list[socket.socket], timeout_s: float = 2.0) -> str:
    """Send ``watch`` on a new connection; its first reply line ("" if none in time)."""
    sock = socket.create_connection((HOST, port), timeout=timeout_s)
    opened.append(sock)
    sock.sendall(b"watch\r\n")
    reply = b""
    try:
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
    except TimeoutError:
        pass
    return reply.decode().split("\r\n")[0]


def _fill_watchers(port: int, opened: list[socket.socket]) -> str:
    """20 watchers, then the 21st's answer."""
    for _ in range(WATCHER_LIMIT):
        assert _watch(port, opened) == "OK"
    return _watch(port, opened)


def test_watch_limit_leak_is_a_leaked_lock(build_debian, tmp_path: Path, sessions) -> None:  # type: ignore[no-untyped-def]
    """The 21st watch answers "too many" and its worker keeps logger_stack_lock; the next
    watch (on the other worker: connections go round-robin over -t 2) and the logger
    thread wait for it. No cycle; the proof names the owner and the waiters."""
    build = build_debian(WATCH_LEAK)
    with MemcachedServer(_server_config(build, 1024), tmp_path / "server.log") as server:
        prover = Prover(server.pid, build.binary)
        prover.warm()
        assert prover.leaked_lock() is None  # healthy at start
        assert _fill_watchers(server.port, sessions).startswith("WATCHER_TOO_MANY")
        assert _watch(server.port, sessions, 1.0) == ""  # hangs on the leaked lock
        diagnosis = _until(prover.leaked_lock)
        assert diagnosis is not None, "leak not proven"
        assert prover.cycle() is None
    assert diagnosis.hang_class is HangClass.LEAKED_LOCK and diagnosis.proof is HangProof.OWNER
    leak = diagnosis.details["leak_proof"]["leaks"][0]
    assert diagnosis.details["lock"] == leak["lock"] == "logger_stack_lock"
    assert leak["owner_name"] == "mc-worker" and leak["sleeps_in"].startswith("epoll")
    assert leak["owner_code"] == "worker_libevent"  # idle in its event loop
    waiters = {w["name"] for w in leak["waiters"]}
    assert "mc-worker" in waiters, leak  # the other worker, blocked in its watch
    assert all(w["tid"] != leak["owner"] for w in leak["waiters"])
    assert diagnosis.hung_tid == leak["owner"]
    assert f"thread {leak['owner']} (mc-worker) holds logger_stack_lock" in diagnosis.summary


def test_watch_steps_on_pristine_prove_nothing(pristine, tmp_path: Path, sessions) -> None:  # type: ignore[no-untyped-def]
    """The same steps on Debian's 1.6.18: "too many" twice, no proof of any kind."""
    with MemcachedServer(_server_config(pristine, 1024), tmp_path / "server.log") as server:
        prover = Prover(server.pid, pristine.binary)
        prover.warm()
        assert build_symbols(server.pid) == {"maxconns_handler", "allow_new_conns"}
        assert _fill_watchers(server.port, sessions).startswith("WATCHER_TOO_MANY")
        assert _watch(server.port, sessions).startswith("WATCHER_TOO_MANY")
        held = TelnetSession.open(HOST, server.port, 2.0, "socket")
        try:
            for _ in range(3):
                assert prover.leaked_lock() is None
                assert prover.cycle() is None
                assert prover.spin(held) is None
        finally:
            held.close()


def test_spin_on_a_command_is_a_livelock(build_debian, tmp_path: Path, sessions) -> None:  # type: ignore[no-untyped-def]
    """A get of "spin:x" spins its worker; stats (answered by the other worker) stand still:
    livelock, naming the thread and the function."""
    build = build_debian(SPIN)
    with MemcachedServer(_server_config(build, 1024), tmp_path / "server.log") as server:
        prover = Prover(server.pid, build.binary)
        prover.warm()
        held = TelnetSession.open(HOST, server.port, 2.0, "socket")
        try:
            assert prover.spin(held) is None  # idle: nothing on CPU
            spinner = socket.create_connection((HOST, server.port), timeout=2.0)
            sessions.append(spinner)
            spinner.sendall(b"get spin:x\r\n")
            diagnosis = _until(lambda: prover.spin(held), 15.0)
            assert prover.leaked_lock() is None and prover.cycle() is None
            # a server that answers no stats at all (its spinner holds what stats needs, as
            # upstream 1.4.22's stats sizes did): the spin is proven on the frozen server
            frozen = _until(lambda: _proven(find_spin(server.pid, lambda: None)), 15.0)
            answers = iter([None, {"cmd_get": "1"}])  # frozen, then answering: it moved on
            thawed = find_spin(server.pid, lambda: next(answers), backtrace=False)
            # the same spinner while the other worker serves a flood: counters move, so
            # it is not proven (a busy server's workers look the same on CPU)
            flood = Flood(
                FloodConfig(
                    port=server.port,
                    concurrency=50,
                    processes=1,
                    duration_s=8.0,
                    mix=(("get", 0.5), ("set", 0.5)),
                    start_method="spawn",
                )
            )
            with flood:
                time.sleep(0.5)
                busy = find_spin(server.pid, lambda: _held_stats(held), backtrace=False)
        finally:
            held.close()
    assert not busy.proven and busy.reason.startswith("counters moved"), busy.to_json()
    assert frozen is not None and frozen.frozen, "spin not proven on a frozen server"
    assert "while the server answered no stats" in frozen.describe()
    assert frozen.spinners[0].function == "spin_on_key"
    assert not thawed.proven and "answered stats again" in thawed.reason, thawed.to_json()
    assert diagnosis is not None, "spin not proven"
    assert diagnosis.hang_class is HangClass.LIVELOCK and diagnosis.proof is HangProof.SPIN
    assert diagnosis.details["function"] == "spin_on_key"
    (spinning,) = diagnosis.details["spin_proof"]["spinners"]
    assert spinning["name"] == "mc-worker" and diagnosis.hung_tid == spinning["tid"]
    assert diagnosis.summary.startswith(
        f"thread {spinning['tid']} (mc-worker) spins in spin_on_key"
    )


def test_healthy_server_under_flood_is_never_leaked_or_spinning(pristine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Pristine 1.6.18 (-t 4) under a 300-client flood of sets, gets and stats on two hot
    keys for ~12 s, workers busy: neither proof ever holds. (A mutex waiter is rare even so:
    benchmarks/leak_hold.py saw none across two reads.)"""
    config = _server_config(pristine, 4096)
    config = dataclasses.replace(config, threads=4)
    symbols = SymbolTable.load(pristine.binary)
    contended = spins_refused = 0
    with MemcachedServer(config, tmp_path / "server.log") as server:
        warm_up(server.pid, symbols)
        held = TelnetSession.open(HOST, server.port, 2.0, "socket")
        try:
            flood = Flood(
                FloodConfig(
                    port=server.port,
                    concurrency=300,
                    processes=1,
                    duration_s=20.0,
                    ops_per_connection=20,
                    mix=(("set", 0.4), ("get", 0.3), ("stats", 0.3)),
                    key_space=2,  # two hot keys: workers meet on item locks and stats_lock
                    start_method="spawn",
                )
            )
            with flood:
                started = time.monotonic()
                while time.monotonic() - started < 12.0 and flood.running:
                    leak = find_leaked_lock(server.pid, symbols)
                    assert not leak.proven, leak.to_json()
                    contended += leak.contended
                    spin = find_spin(server.pid, lambda: _held_stats(held), backtrace=False)
                    assert not spin.proven, spin.to_json()
                    spins_refused += spin.reason.startswith("counters moved")
            after = _held_stats(held)
        finally:
            held.close()
    assert after is not None and int(after["cmd_set"]) > 1000, "the flood did not run"
    print(f"leak candidates seen {contended}, busy workers refused as spinning {spins_refused}")


def _proven(proof: SpinProof) -> SpinProof | None:
    return proof if proof.proven else None


def test_an_amplifier_sleep_never_passes_for_a_leaked_lock() -> None:
    """A stretch sleeps, maybe holding a lock others wait for: the hold bound outlasts it."""
    assert hold_bound([]) == hold_bound([20_000, 50_000]) == 0.3  # the scenarios' delays
    assert hold_bound([1_000, 500_000]) == 1.0  # --delay-us 500000: twice the sleep


def _confirm(
    server: MemcachedServer, prover: Prover, held: TelnetSession
) -> tuple[HangProof | None, _Soak]:
    """The trial's confirmation step (after a failed probe), run once on ``server``."""
    result = TrialResult(0, TrialOutcome.CLEAN, 0.0, "", "socket")
    settings = TrialSettings(soak_s=1.0, threads=2, probe_client="socket")
    soak = _Soak(result, server, None, held, {}, settings, prover, lambda: 0, None, bool)  # type: ignore[arg-type]
    return soak._confirm(None), soak


@pytest.mark.parametrize("leaky", [True, False], ids=["watch-leak", "pristine"])
def test_the_trial_confirms_a_leaked_lock_before_timing(  # type: ignore[no-untyped-def]
    build_debian, tmp_path: Path, sessions, leaky: bool
) -> None:
    """run/trial.py's confirmation tries the leaked lock after cycle and state: the watch
    leak is proven by its owner at once; the same steps on pristine 1.6.18 are no hang."""
    build = build_debian(WATCH_LEAK) if leaky else build_debian()
    with MemcachedServer(_server_config(build, 1024), tmp_path / "server.log") as server:
        prover = Prover(server.pid, build.binary)
        prover.warm()
        held = TelnetSession.open(HOST, server.port, 2.0, "socket")
        try:
            _fill_watchers(server.port, sessions)
            _watch(server.port, sessions, 1.0)
            time.sleep(0.2)  # the 22nd watch reaches the lock
            proof, soak = _confirm(server, prover, held)
        finally:
            held.close()
    if leaky:
        assert proof is HangProof.OWNER
        assert soak.proven is not None and soak.proven.hang_class is HangClass.LEAKED_LOCK
    else:
        assert proof is None and soak.proven is None
