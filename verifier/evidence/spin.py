"""Prove a spinning thread (a livelock) from the live process: on CPU, never asleep, no progress.

A thread stuck in a loop that makes no syscall is invisible to the wait-for graph: it
waits for nothing. Proven when, over ``window_s`` sampled every ``interval_s``:

1. the thread is runnable (state R) and in no syscall (/proc/.../syscall says "running")
   at every sample;
2. its voluntary context switches (/proc/.../status) did not change: it never blocked,
   not once, so it made no sleeping syscall in the whole window;
3. its CPU time advanced by at least ``min_cpu`` of the window (it is really on CPU);
4. the server's progress counters, read through ``stats`` (the caller's reader, a held
   connection) before the first sample and after the last, did not move. A busy worker
   under a flood also satisfies 1-3 (epoll always has work, so it never sleeps), but it
   moves ``cmd_get``, ``get_hits``...: never proven. Nor while stats says a background
   job runs (``hash_is_expanding``, ``slab_reassign_running``, ``lru_crawler_running``).
   When ``stats`` answers neither before nor after the window, the server showed no
   progress at all (a frozen server): a thread that spun through it is proven too, over a
   window as long as the timing confirmation's (``CONFIRM_WINDOW_S``: a stall shorter
   than that, such as a long hash expansion, must never pass for a livelock), and the
   proof says the server answered nothing (``frozen``). Upstream 1.4.22 under the
   ``lru-crawler-crawl`` workload was "unknown, whole server frozen" by timing alone; now
   it is this proof (``stats sizes`` on CPU in ``do_item_stats_sizes`` with ``cache_lock``
   held). 1.6.44's GETK hang (7aa08ac2b) was also frozen by timing; not re-run since. A
   stats answer after the window means it moved on.

The code it spins in is named by one gdb backtrace of that thread, taken after the spin
is established (/proc gives no pc for a running thread: ``kstkeip`` reads 0 outside a
core dump, ``syscall`` says "running"). Without gdb the function is left out.
Measured (benchmarks/leak_hold.py, 5 runs each, 2 shared cores at load 14-18): the proof
costs 2.2-2.8 s median, its 1 s window plus one gdb attach; before the window a thread is
on CPU, it costs one /proc read.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from verifier.evidence import gdb
from verifier.evidence.memory import (
    ThreadSample,
    require_alive,
    require_x86_64,
    sample_thread,
    thread_ids,
)
from verifier.limits import CONFIRM_WINDOW_S

# stats counters a worker moves when it serves anything (bytes_* move with the reader's own
# "stats", and connection counters with the verifier's probes: not progress)
PROGRESS_COUNTERS = (
    "cmd_get",
    "cmd_set",
    "cmd_touch",
    "cmd_flush",
    "get_hits",
    "get_misses",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "cas_hits",
    "cas_misses",
    "total_items",
)
# background jobs that legitimately run on CPU without moving the counters above: a spin
# is never proven while stats says one of them runs
BUSY_FLAGS = ("hash_is_expanding", "slab_reassign_running", "lru_crawler_running")
WINDOW_S = 1.0
INTERVAL_S = 0.1
# of the window: on 2 cores shared with other work (load average 14-18) the spin fixture got
# 0.18-0.28 s of CPU per 1 s window (14 runs); 0.2 failed 2 of 6 proofs, so 5% is asked for
MIN_CPU = 0.05

StatsReader = Callable[[], Mapping[str, str] | None]


@dataclass(frozen=True)
class Spinner:
    tid: int
    name: str
    cpu_s: float  # CPU time over the window
    function: str  # the innermost program function (gdb), "" if not read
    stack: str  # that thread's backtrace excerpt, "" if not read

    def describe(self, window_s: float, frozen: bool = False) -> str:
        where = f" in {self.function}" if self.function else ""
        still = "the server answered no stats" if frozen else "the server's counters stood still"
        return (
            f"thread {self.tid} ({self.name}) spins{where}: on CPU {self.cpu_s:.2f} s of "
            f"{window_s:.1f} s, never blocked, while {still}"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "tid": self.tid,
            "name": self.name,
            "cpu_s": round(self.cpu_s, 3),
            "function": self.function,
            "stack": self.stack,
        }


@dataclass
class SpinProof:
    pid: int
    spinners: list[Spinner]
    window_s: float
    counters: dict[str, str] = field(default_factory=dict)  # the frozen counters, as read
    reason: str = ""  # why nothing is proven ("" when proven)
    frozen: bool = False  # stats answered neither before nor after: no counters to read

    @property
    def proven(self) -> bool:
        return bool(self.spinners)

    def describe(self) -> str:
        spins = (s.describe(self.window_s, self.frozen) for s in self.spinners)
        return "; ".join(spins) or self.reason

    def to_json(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "spinners": [s.to_json() for s in self.spinners],
            "window_s": self.window_s,
            "counters": self.counters,
            "reason": self.reason,
            "frozen": self.frozen,
        }


def voluntary_switches(pid: int, tid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as handle:
            for line in handle:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _on_cpu(sample: ThreadSample | None) -> bool:
    return sample is not None and sample.state == "R" and sample.syscall is None


def _progress(stats: Mapping[str, str] | None) -> dict[str, str]:
    return {k: stats[k] for k in PROGRESS_COUNTERS if stats and k in stats}


def find_spin(
    pid: int,
    stats: StatsReader,
    *,
    window_s: float = WINDOW_S,
    interval_s: float = INTERVAL_S,
    min_cpu: float = MIN_CPU,
    backtrace: bool = True,
) -> SpinProof:
    """Sample ``pid``'s threads for ``window_s`` and prove the ones that spin (see the module
    docstring). ``stats``: reads the server's ``stats`` (None: no answer, nothing proven).
    Raises ``ProcessGone`` if the process exits."""
    require_x86_64()
    require_alive(pid)
    first = {tid: sample_thread(pid, tid) for tid in thread_ids(pid)}
    switches = {tid: voluntary_switches(pid, tid) for tid in first}
    running = {tid for tid, s in first.items() if _on_cpu(s) and switches[tid] is not None}
    if not running:  # the common case costs one /proc read, no stats round trip
        return SpinProof(pid, [], window_s, reason="no thread on CPU")
    first_answer = stats()
    before = _progress(first_answer)
    if first_answer and not before:
        return SpinProof(pid, [], window_s, reason="no progress counters readable")
    if first_answer is None:  # frozen: no counters, so the spin must outlast a timing proof
        window_s = max(window_s, CONFIRM_WINDOW_S)
    started = time.monotonic()
    while running and time.monotonic() - started < window_s:
        time.sleep(interval_s)
        running = {t for t in running if _on_cpu(sample_thread(pid, t))}
    elapsed = time.monotonic() - started
    spinning: list[tuple[int, str, float]] = []
    short: list[str] = []
    for tid in sorted(running):
        last, start = sample_thread(pid, tid), first[tid]
        assert start is not None
        if (
            last is None
            or voluntary_switches(pid, tid) != switches[tid]
            or start.run_ns is None
            or last.run_ns is None
        ):
            continue
        cpu_s = (last.run_ns - start.run_ns) / 1e9
        if cpu_s >= min_cpu * elapsed:
            spinning.append((tid, last.name, cpu_s))
        else:
            short.append(f"thread {tid} ran only {cpu_s:.3f} s")
    if not spinning:
        why = "no thread stayed on CPU without blocking" + (
            f" ({'; '.join(short)})" if short else ""
        )
        return SpinProof(pid, [], window_s, reason=why)
    answer = stats()
    frozen = first_answer is None
    if frozen and answer is not None:
        return SpinProof(pid, [], window_s, reason="the server answered stats again: not stuck")
    after = _progress(answer)
    busy = [flag for flag in BUSY_FLAGS if answer and answer.get(flag) not in (None, "0")]
    if busy:
        return SpinProof(pid, [], window_s, reason=f"background work running ({', '.join(busy)})")
    if after != before:
        moved = sorted(k for k in before if after.get(k) != before[k])
        why = f"counters moved ({', '.join(moved) or 'unreadable'}): busy, not spinning"
        return SpinProof(pid, [], window_s, reason=why)
    stacks = _backtraces(pid, [t for t, _, _ in spinning]) if backtrace else {}
    spinners = [Spinner(tid, name, cpu, *stacks.get(tid, ("", ""))) for tid, name, cpu in spinning]
    # a thread spinning to take a lock (1.4.x's mutex_lock is a trylock loop) waits for the
    # one that holds it: that one is named first (upstream 1.4.22: mutex_lock waited for
    # do_item_stats_sizes, which walked the LRU holding cache_lock)
    spinners.sort(key=lambda spinner: "lock" in spinner.function)
    return SpinProof(pid, spinners, elapsed, after, frozen=frozen)


_LIB = re.compile(r"^(__|_IO|start_thread|clone)")


def _backtraces(pid: int, tids: list[int]) -> dict[int, tuple[str, str]]:
    """tid -> (innermost program function, backtrace excerpt), from one gdb dump."""
    dump = gdb.dump(pid)
    found: dict[int, tuple[str, str]] = {}
    for stack in dump.threads:
        if stack.lwp in tids:
            function = next(
                (
                    f.function
                    for f in stack.frames
                    if f.function != "??" and not _LIB.match(f.function)
                ),
                "",
            )
            found[stack.lwp] = (function, gdb.thread_excerpt(dump.text, stack.lwp))
    return found
