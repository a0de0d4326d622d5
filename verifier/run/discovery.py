"""The discovery run: a short unstretched flood while auto looks for places to stretch.

The server runs with libamplify's probes and no delay: every wrapped libc call is
interposed with ``ret=-1, errno=any, delay_us=0`` (failures counted per errno and thread
kind) and every pthread_mutex_lock goes through the trylock-first lock probe (contended
acquisitions counted per mutex and call site). Meanwhile counting write breakpoints
rotate over the executable's data objects from outside, four at a time on every thread:
a first pass with short windows finds the objects stored to at all (most of memcached's
138 are configuration, never stored under load), a second pass shares the rest of the
budget among those not yet seen stored by both the main thread and another one, so that
a variable whose main-thread stores are rare (``allow_new_conns``: two per EMFILE
episode) is still seen written by both. See ``DiscoveryTiming`` for the numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from verifier.amplify.auto.discovery import (
    Discovery,
    call_findings,
    mutex_findings,
    variable_findings,
)
from verifier.amplify.auto.hwcount import MAX_ADDRESSES, WriteCounter, threads
from verifier.amplify.auto.symbols import DataSymbol, code_locations, data_symbols, watch_span
from verifier.amplify.counters import read_status, require_armed
from verifier.amplify.library import build_library, preload_env
from verifier.amplify.spec import INTERPOSABLE, InterposeRule, LockRule, Rule
from verifier.errors import HarnessError
from verifier.run.server import MemcachedServer, ServerConfig
from verifier.stress import Flood, FloodConfig

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DiscoveryTiming:
    """How the watch budget is spent (seconds).

    The windows start once the flood has reached the listener's limit (a failed call on
    the main thread: accept() with EMFILE) or after ``warmup_max_s``. Pass 1 gives every
    object ``first_window_s``; pass 2 shares what is left of ``seconds`` evenly among the
    objects stored to in pass 1 but not yet by both kinds of thread. Measured on pristine
    1.6.18 at -c 64 (-o no_maxconns_fast) under a 400-client flood, 2 loaded cores: the
    flood needs 0.5-2 s to reach EMFILE; 138 objects, 35 batches, pass 1 about 1.2 s;
    12 stored to; allow_new_conns's worker stores show within 30 ms, its main-thread
    stores (about 4 EMFILE episodes a second, two stores each) need windows of 0.5 s,
    more on a slower machine: 4 s leave pass 2 about 0.9 s per batch of 4.
    """

    seconds: float = 4.0  # total time spent counting stores
    warmup_min_s: float = 0.3
    warmup_max_s: float = 3.0
    first_window_s: float = 0.03


def discovery_rules() -> list[Rule]:
    """Probes only: count failures of every wrapped call and every contended lock."""
    # epoll_ctl fails in libevent's normal course (EEXIST, then a MOD): not a point
    calls = tuple(f for f in INTERPOSABLE if f not in ("pthread_mutex_lock", "epoll_ctl"))
    return [InterposeRule(calls, ret=-1, errno_name=None, delay_us=0), LockRule(delay_us=0)]


def _executable_ranges(pid: int, binary: Path) -> list[tuple[int, int]]:
    """Address ranges where ``binary`` is mapped in ``pid`` (from /proc/PID/maps)."""
    want = str(binary.resolve())
    ranges = []
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].strip() == want:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((start, end))
    return ranges


def _batches(items: Sequence[DataSymbol]) -> list[list[DataSymbol]]:
    return [list(items[i : i + MAX_ADDRESSES]) for i in range(0, len(items), MAX_ADDRESSES)]


def discover_live(
    pid: int,
    binary: Path,
    status_file: Path,
    timing: DiscoveryTiming | None = None,
    progress: Progress | None = None,
    flood_started: float | None = None,
) -> Discovery:
    """Discover on a running server (started with ``discovery_rules()``) under a running flood.

    ``pid`` is the server process; ``status_file`` its amplifier status; ``flood_started``
    (time.monotonic) dates the failure and lock counts for their rates (default: now).
    """
    timing = timing or DiscoveryTiming()
    started = time.monotonic() if flood_started is None else flood_started
    symbols = data_symbols(binary)
    status = read_status(status_file)
    if status.pid != pid:
        raise HarnessError(f"amplifier status {status_file} belongs to pid {status.pid}, not {pid}")
    bias, main_tid = status.load_bias, status.main_tid
    spans = {s.name: watch_span(s.offset, s.size) for s in symbols}
    counts: dict[str, dict[int, int]] = {s.name: {} for s in symbols}
    windows: dict[str, float] = dict.fromkeys(spans, 0.0)
    names: dict[int, str] = {}
    exe_ranges = _executable_ranges(pid, binary)
    watch_start = time.monotonic()

    def watch(batch: list[DataSymbol], window_s: float) -> None:
        live = threads(pid)
        if not live:
            raise HarnessError(f"server {pid} exited during discovery")
        names.update((t.tid, t.name) for t in live)
        with WriteCounter(pid) as counter:
            abs_spans = [(spans[s.name][0] + bias, spans[s.name][1]) for s in batch]
            counter.open(abs_spans, [t.tid for t in live])
            t0 = time.monotonic()
            time.sleep(window_s)
            got = counter.read()
            elapsed = time.monotonic() - t0
        for (tid, index), n in got.items():
            per = counts[batch[index].name]
            per[tid] = per.get(tid, 0) + n
        for sym in batch:
            windows[sym.name] += elapsed

    first = _batches(symbols)
    for i, batch in enumerate(first):
        watch(batch, timing.first_window_s)
        if progress is not None and i % 8 == 0:
            progress(f"discovery: pass 1, {i * MAX_ADDRESSES}/{len(symbols)} objects")

    def undecided(sym: DataSymbol) -> bool:
        per = counts[sym.name]
        by_main = per.get(main_tid, 0) > 0
        by_other = any(n > 0 for tid, n in per.items() if tid != main_tid)
        return (by_main or by_other) and not (by_main and by_other)

    second = _batches([s for s in symbols if undecided(s)])
    remaining = timing.seconds - (time.monotonic() - watch_start)
    if second and remaining > 0:
        for batch in second:
            watch(batch, remaining / len(second))
        if progress is not None:
            progress(f"discovery: pass 2, {sum(map(len, second))} objects watched longer")
    watch_seconds = time.monotonic() - watch_start

    status = read_status(status_file)
    flood_seconds = time.monotonic() - started
    pcs = [f.last_pc for f in status.failures] + [m.site for m in status.mutexes]
    offsets = {pc: pc - bias - 1 for pc in pcs}
    located = code_locations(binary, (o for o in offsets.values() if o > 0))

    def in_executable(pc: int) -> bool:
        return any(start <= pc < end for start, end in exe_ranges)

    def locate(pc: int) -> str:
        loc = located.get(offsets.get(pc, -1))
        return loc.text() if loc is not None and loc.known and in_executable(pc) else ""

    def function_of(pc: int) -> str:
        loc = located.get(offsets.get(pc, -1))
        return loc.function if loc is not None and in_executable(pc) else ""

    notes = []
    if status.failures_dropped or status.mutexes_dropped:
        notes.append(
            f"tables full: {status.failures_dropped} failures, "
            f"{status.mutexes_dropped} contended locks not counted"
        )
    return Discovery(
        binary=str(binary),
        seconds=flood_seconds,
        watch_seconds=watch_seconds,
        scanned=len(symbols),
        threads=len(names),
        variables=variable_findings(symbols, spans, counts, windows, names, main_tid),
        calls=call_findings(status, locate),
        mutexes=mutex_findings(status, symbols, locate, function_of, in_executable),
        lock_calls=status.lock_calls,
        notes=tuple(notes),
    )


def _warm_up(status_file: Path, timing: DiscoveryTiming) -> None:
    """Wait until the main thread saw a call fail (the flood reached the fd limit)."""
    start = time.monotonic()
    time.sleep(timing.warmup_min_s)
    while time.monotonic() - start < timing.warmup_max_s:
        if any(f.main for f in read_status(status_file).failures):
            return
        time.sleep(0.05)


def discover(
    binary: Path,
    server: ServerConfig,
    flood: FloodConfig,
    tools_dir: Path,
    out_dir: Path,
    seconds: float = DiscoveryTiming.seconds,
    progress: Progress | None = None,
) -> Discovery:
    """Start ``server`` (its env gets the discovery probes) and ``flood`` against it, discover,
    stop both, and save ``out_dir/discovery.json``.

    ``flood``'s port and duration are set here; the flood is stopped when discovery ends.
    """
    timing = DiscoveryTiming(seconds=seconds)
    out_dir.mkdir(parents=True, exist_ok=True)
    status_file = out_dir / "discovery.status"
    env = {
        **server.env,
        **preload_env(
            build_library(tools_dir), discovery_rules(), status_file, base={}, target=binary
        ),
    }
    instance = MemcachedServer(
        replace(server, binary=binary, env=env), out_dir / "discovery-server.log"
    )
    running: Flood | None = None
    try:
        instance.start()
        require_armed(read_status(status_file), discovery_rules())
        budget = timing.warmup_max_s + 4 * timing.seconds + 30.0  # a backstop: stopped below
        running = Flood(
            replace(flood, **instance.endpoints(), duration_s=budget, start_method="spawn")
        )
        running.start()
        flood_started = time.monotonic()
        _warm_up(status_file, timing)
        found = discover_live(instance.pid, binary, status_file, timing, progress, flood_started)
    finally:
        if running is not None:
            running.stop()
        instance.stop()
    found.save(out_dir / "discovery.json")
    return found
