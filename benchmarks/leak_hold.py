"""How long healthy memcached holds its locks under a flood, and what the new proofs cost.

    .venv/bin/python benchmarks/leak_hold.py [--seconds 20] [--runs 5] [--cache-dir DIR]

1. Pristine Debian 1.6.18 (-t 4, -c 4096) under a 300-client flood (gets, sets, stats) for
   --seconds: the wait-for graph is read back to back (as fast as it can, a few ms apart);
   for every contended mutex it records how long the same owner was seen with a waiter
   (any owner state), and how long a leaked-lock candidate lasted: an owner asleep in a
   syscall that is no mutex wait, its CPU time unchanged, a waiter behind it. The longest
   of the latter is what ``leaked_lock.MIN_HOLD_S`` must exceed. Then the cost of 50
   ``find_leaked_lock`` and ``find_deadlock`` calls under the flood (what CycleWatch pays).
2. --runs servers of reintroduce-watch-lock-leak.diff: 20 watchers, a 21st, a 22nd; seconds
   from the 22nd until ``find_leaked_lock`` proves it, and its cost.
3. --runs servers of spin-on-command.diff: ``get spin:x``; the spin proof's cost (its 1 s
   window and one gdb backtrace).
Other work on the machine skews absolute times.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from verifier.build.builder import Builder, BuildRequest, BuildResult
from verifier.evidence.leaked_lock import (
    MIN_HOLD_S,
    _candidates,
    _snapshot,
    _still,
    find_leaked_lock,
)
from verifier.evidence.memory import ProcessImage, ProcessMemory
from verifier.evidence.spin import find_spin
from verifier.evidence.symtab import SymbolTable
from verifier.evidence.waitfor import find_deadlock, warm_up
from verifier.paths import CacheLayout, default_cache_dir
from verifier.probe.telnet import TelnetSession
from verifier.run.server import HOST, MemcachedServer, ServerConfig, server_options_for
from verifier.source.select import choose_source
from verifier.stress import Flood, FloodConfig

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "tests" / "fixtures" / "patches"
# stats takes stats_lock and every worker's stats lock; sets on two keys meet on item locks
CONTENDED_MIX = (("set", 0.4), ("get", 0.3), ("stats", 0.3))


def _config(build: BuildResult, threads: int, maxconns: int) -> ServerConfig:
    args = server_options_for(
        build.binary, [(o.args, o.when_help_mentions) for o in build.recipe.server_options]
    )
    return ServerConfig(build.binary, threads, maxconns, tuple(args))


def _median_p90(values: list[float], scale: float = 1000.0) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(ordered) * scale:.1f} / {p90 * scale:.1f}"


def healthy_holds(
    build: BuildResult, seconds: float, work: Path, watchers: bool
) -> list[list[str]]:
    """With ``watchers``: 20 idle watchers (the logger thread takes logger_stack_lock to feed
    them every event of the flood) and a ``watch`` refused every read, which takes it too."""
    label = "healthy flood + watchers" if watchers else "healthy flood"
    opened: list[socket.socket] = []
    symbols = SymbolTable.load(build.binary)
    reads = contended_reads = candidate_reads = 0
    owned: dict[tuple[int, int], float] = {}  # (mutex, owner) -> first seen, waiter behind
    sleeping: dict[tuple[int, int], tuple[float, object]] = {}
    longest_owned = longest_sleeping = 0.0
    with MemcachedServer(_config(build, 4, 4096), work / "healthy.log") as server:
        warm_up(server.pid, symbols)
        image = ProcessImage.read(server.pid, symbols)
        flood = Flood(
            FloodConfig(
                port=server.port,
                concurrency=400,
                processes=2,
                duration_s=seconds + 5,
                ops_per_connection=20,
                mix=CONTENDED_MIX,
                key_space=2,  # two hot keys: workers meet on their item locks
                start_method="spawn",
            )
        )
        with flood, ProcessMemory(server.pid) as mem:
            for _ in range(20 if watchers else 0):
                _watch(server.port, opened)
            time.sleep(1.0)
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                if watchers:
                    _watch(server.port, opened, reply=False)
                    if len(opened) > 200:
                        for sock in opened[20:]:
                            sock.close()
                        del opened[20:]
                now = time.monotonic()
                samples, waits = _snapshot(server.pid, image, mem)
                reads += 1
                edges = {(w.futex, w.owner) for w in waits if w.is_edge and w.owner}
                contended_reads += bool(edges)
                owned = {k: owned.get(k, now) for k in edges}
                longest_owned = max([longest_owned, *(now - t for t in owned.values())])
                found = _candidates(samples, waits)
                candidate_reads += bool(found)
                kept = {}
                for key, entry in found.items():
                    first = sleeping.get(key)
                    if first is not None and _still(first[1], entry.owner):  # type: ignore[arg-type]
                        kept[key] = first
                    else:
                        kept[key] = (now, entry.owner)
                sleeping = kept
                longest_sleeping = max([longest_sleeping, *(now - t for t, _ in kept.values())])
            costs, graph_costs = [], []  # what CycleWatch pays per read, leak and cycle
            for _ in range(50):
                started = time.perf_counter()
                find_leaked_lock(server.pid, symbols)
                costs.append(time.perf_counter() - started)
                started = time.perf_counter()
                find_deadlock(server.pid, symbols)
                graph_costs.append(time.perf_counter() - started)
    for sock in opened:
        sock.close()
    return [
        [f"{label}: graph reads (contended / leak candidates)",
         f"{reads} ({contended_reads} / {candidate_reads}) in {seconds:.0f} s"],
        [f"{label}: longest same owner with a waiter (ms)", f"{longest_owned * 1000:.1f}"],
        [f"{label}: longest leak candidate, owner unchanged (ms)",
         f"{longest_sleeping * 1000:.1f} (bound used: {MIN_HOLD_S * 1000:.0f})"],
        [f"{label}: find_leaked_lock, no leak, ms (median / p90 of 50)", _median_p90(costs)],
        [f"{label}: find_deadlock, no cycle, ms (median / p90 of 50)", _median_p90(graph_costs)],
    ]  # fmt: skip


def _watch(port: int, opened: list[socket.socket], reply: bool = True) -> str:
    sock = socket.create_connection((HOST, port), timeout=1.0)
    opened.append(sock)
    sock.sendall(b"watch\r\n")
    if not reply:
        return ""
    try:
        return sock.recv(256).decode().split("\r\n")[0]
    except TimeoutError:
        return ""


def watch_leak_runs(build: BuildResult, runs: int, work: Path) -> list[list[str]]:
    symbols = SymbolTable.load(build.binary)
    proven, to_proof, costs = 0, [], []
    for run in range(runs):
        opened: list[socket.socket] = []
        with MemcachedServer(_config(build, 2, 1024), work / f"watch-{run}.log") as server:
            warm_up(server.pid, symbols)
            try:
                for _ in range(21):
                    _watch(server.port, opened)
                sent = time.monotonic()
                _watch(server.port, opened)
                while time.monotonic() - sent < 10:
                    started = time.perf_counter()
                    proof = find_leaked_lock(server.pid, symbols)
                    if proof.proven:
                        costs.append(time.perf_counter() - started)
                        to_proof.append(time.monotonic() - sent)
                        proven += 1
                        break
            finally:
                for sock in opened:
                    sock.close()
    return [
        ["watch leak: proven / runs", f"{proven} / {runs}"],
        ["watch leak: s from the 22nd watch to proof (median / p90)",
         _median_p90(to_proof, 1.0)],
        ["watch leak: proof cost, ms (median / p90)", _median_p90(costs)],
    ]  # fmt: skip


def spin_runs(build: BuildResult, runs: int, work: Path) -> list[list[str]]:
    proven, costs = 0, []
    for run in range(runs):
        with MemcachedServer(_config(build, 2, 1024), work / f"spin-{run}.log") as server:
            held = TelnetSession.open(HOST, server.port, 2.0, "socket")
            spinner = socket.create_connection((HOST, server.port), timeout=1.0)
            try:
                spinner.sendall(b"get spin:x\r\n")
                time.sleep(0.2)
                started = time.perf_counter()
                proof = find_spin(server.pid, lambda: held.stats(1.0))  # noqa: B023
                costs.append(time.perf_counter() - started)
                proven += proof.proven and proof.spinners[0].function == "spin_on_key"
            finally:
                spinner.close()
                held.close()
    return [
        ["spin: proven naming spin_on_key / runs", f"{proven} / {runs}"],
        ["spin: proof cost, ms (median / p90)", _median_p90(costs)],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    cache = CacheLayout(args.cache_dir or default_cache_dir())
    source = choose_source(None, "debian", cache)
    builder = Builder(cache.builds, cache.locks)
    ref = source.default_ref
    assert ref is not None
    pristine = builder.build(BuildRequest(source, ref))
    leak = builder.build(BuildRequest(source, ref, (PATCHES / "reintroduce-watch-lock-leak.diff",)))
    spin = builder.build(BuildRequest(source, ref, (PATCHES / "spin-on-command.diff",)))
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="leak-hold-") as tmp:
        work = Path(tmp)
        for watchers in (False, True):
            rows += healthy_holds(pristine, min(args.seconds, 25.0), work, watchers)
        rows += watch_leak_runs(leak, args.runs, work)
        rows += spin_runs(spin, args.runs, work)
    print(tabulate(rows, headers=["figure", "value"]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
