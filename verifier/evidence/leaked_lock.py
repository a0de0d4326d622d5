"""Prove a leaked lock from the live process: a mutex whose owner sleeps elsewhere, for good.

A wait-for graph without a cycle can still hang: a thread took a mutex and went back to
its idle loop without releasing it (memcached's ``watch`` limit path before 1.5.20). The
graph shows it as an edge from each waiter to an owner that waits for no mutex at all.

Proven when, across ``snapshots`` reads of the process spanning at least ``hold_s``:

1. mutex M names the same owner T in every read, with a waiter marked in its lock word;
2. T is alive and asleep in the same syscall at the same pc every time, and that syscall
   is not a wait for a mutex (``epoll_wait``, ``read``, a condition variable, a sleep);
3. T's CPU time (schedstat) did not change between the first and the last read: T ran
   no instruction in between, so it cannot have released M and taken it again;
4. at least one other thread waits for M in every read;
5. an owner asleep on a condition variable waits for another thread, which may be slow
   (pause_threads() holds lru_maintainer_lock until every worker pauses): it must stay so
   for ``CONDVAR_MIN_HOLD_S`` (3 s), not 0.3 s.

Each read samples threads first and the mutex last, as in ``waitfor``. A thread that
legitimately sleeps holding a lock fails 3: memcached's slab mover keeps
``slabs_rebalance_lock`` across its ``usleep`` backoff (1 us doubling to 1 ms) while
``pause_threads`` may block on it in ``slabs_rebalancer_pause``, but the mover runs
between its sleeps, so its CPU time moves within any 0.3 s.

The bound, ``MIN_HOLD_S`` = 0.3 s: benchmarks/leak_hold.py read the graph of pristine
1.6.18 (-t 4) back to back (5-20 ms apart) under a 400-client flood (sets and gets on
two hot keys, 30% stats) for 20 s, and again with 20 idle watchers and a refused
``watch`` per read (logger_stack_lock), four times on 2 shared cores (load average
14-18): ~13,000 reads, 7 with a mutex waiter; the longest a mutex kept the same owner
with a waiter across reads was 31 ms (an owner preempted, runnable: not asleep, so never
a candidate), and no leak candidate (owner asleep) appeared at all. 0.3 s is ten times
that 31 ms; the proof still lands 0.32 s after the leak (20/20 watch-leak runs).
Reads only /proc and /proc/PID/mem; nothing is stopped or attached.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from verifier.evidence.futex_wait import FutexWait, MutexState, WaitKind, call_chain, classify_wait
from verifier.evidence.memory import (
    SYS_FUTEX,
    ProcessImage,
    ProcessMemory,
    ThreadSample,
    require_alive,
    require_x86_64,
    sample_thread,
    thread_ids,
)
from verifier.evidence.symtab import DEBUG_ROOT, SymbolTable
from verifier.evidence.waitfor import lock_name

# Ten times the longest legitimate hold with a waiter seen under a flood (31 ms, owner
# preempted; benchmarks/leak_hold.py, see the module docstring).
MIN_HOLD_S = 0.3
# An owner asleep on a condition variable waits for another thread, which may take its
# time: pause_threads() (hash expansion) keeps lru_maintainer_lock while it waits on
# init_cond for every worker to pause. Seen on upstream 1.6.23 under `everything` with a
# 70,000-key multi-get keeping a worker busy (p99 0.95 s): a "leak" proven after 305 ms,
# and a moment later every thread was idle. Such an owner must hold for 3 s, three times
# that second.
CONDVAR_MIN_HOLD_S = 3.0
CONDVAR_READ_GAP_S = 0.25
SNAPSHOTS = 4
_MAX_FRAMES = 8  # return addresses looked at for the owner's calling function

SYSCALL_NAMES = {
    0: "read",
    1: "write",
    7: "poll",
    23: "select",
    35: "nanosleep",
    43: "accept",
    44: "sendto",
    45: "recvfrom",
    46: "sendmsg",
    47: "recvmsg",
    61: "wait4",
    202: "futex",
    230: "clock_nanosleep",
    232: "epoll_wait",
    270: "pselect6",
    271: "ppoll",
    281: "epoll_pwait",
    288: "accept4",
    441: "epoll_pwait2",
}


def syscall_name(number: int | None) -> str:
    if number is None:
        return "running"
    return SYSCALL_NAMES.get(number, f"syscall {number}")


@dataclass(frozen=True)
class LeakedLock:
    """Mutex ``lock`` held by ``owner`` asleep in ``sleeps_in``, while ``waiters`` wait."""

    mutex: int
    lock: str
    owner: int
    owner_name: str
    sleeps_in: str  # the owner's syscall (and what it waits on, for a futex)
    owner_code: str  # the program function it sleeps from ("" if none could be read)
    waiters: tuple[tuple[int, str], ...]
    held_s: float

    def describe(self) -> str:
        where = self.sleeps_in + (f" (from {self.owner_code})" if self.owner_code else "")
        waiting = ", ".join(f"{tid} ({name})" for tid, name in self.waiters)
        return (
            f"thread {self.owner} ({self.owner_name}) holds {self.lock} and sleeps in {where}, "
            f"not waiting for it; {len(self.waiters)} thread(s) wait for it: {waiting} "
            f"(unchanged for {self.held_s * 1000:.0f} ms, owner did not run)"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "mutex": f"{self.mutex:#x}",
            "lock": self.lock,
            "owner": self.owner,
            "owner_name": self.owner_name,
            "sleeps_in": self.sleeps_in,
            "owner_code": self.owner_code,
            "waiters": [{"tid": t, "name": n} for t, n in self.waiters],
            "held_ms": round(self.held_s * 1000, 1),
        }


@dataclass
class LeakProof:
    """The leaked locks proven (if any), and the condition-variable waits seen (evidence)."""

    pid: int
    leaks: list[LeakedLock]
    condvar_waits: list[str] = field(default_factory=list)
    hold_s: float = MIN_HOLD_S
    notes: list[str] = field(default_factory=list)
    contended: int = 0  # mutexes waited for, in the first read (candidates or not)

    @property
    def proven(self) -> bool:
        return bool(self.leaks)

    def to_json(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "leaks": [leak.to_json() for leak in self.leaks],
            "condvar_waits": self.condvar_waits,
            "min_hold_ms": round(self.hold_s * 1000),
            "contended": self.contended,
            "notes": self.notes,
        }


@dataclass
class _Candidate:
    owner: ThreadSample
    waiters: dict[int, str]
    mutex: MutexState


def _snapshot(
    pid: int, image: ProcessImage, mem: ProcessMemory
) -> tuple[dict[int, ThreadSample], list[FutexWait]]:
    samples = {}
    for tid in thread_ids(pid):
        sample = sample_thread(pid, tid)
        if sample is not None:
            samples[tid] = sample
    if not samples:
        require_alive(pid)
    live = set(samples)
    waits = [
        classify_wait(image, mem, s, live)
        for s in samples.values()
        if s.sleeping and s.syscall == SYS_FUTEX
    ]
    return samples, waits


def _candidates(
    samples: dict[int, ThreadSample], waits: Iterable[FutexWait]
) -> dict[tuple[int, int], _Candidate]:
    """(mutex, owner) -> the owner's sample and the waiters, for owners asleep elsewhere."""
    edges = [w for w in waits if w.is_edge]
    blocked = {w.tid for w in edges}
    found: dict[tuple[int, int], _Candidate] = {}
    for wait in edges:
        assert wait.owner is not None and wait.mutex is not None
        owner = samples.get(wait.owner)
        if owner is None or not owner.sleeping or wait.owner in blocked or wait.owner == wait.tid:
            continue
        key = (wait.futex, wait.owner)
        entry = found.setdefault(key, _Candidate(owner, {}, wait.mutex))
        entry.waiters[wait.tid] = wait.thread_name
    return found


def _still(before: ThreadSample, now: ThreadSample | None) -> bool:
    return (
        now is not None
        and now.sleeping
        and now.syscall == before.syscall
        and now.args[:3] == before.args[:3]
        and now.pc == before.pc
        and before.run_ns is not None
        and now.run_ns == before.run_ns
    )


def _where(
    image: ProcessImage, mem: ProcessMemory, owner: ThreadSample, waits: list[FutexWait]
) -> tuple[str, str]:
    sleeps_in = syscall_name(owner.syscall)
    wait = next((w for w in waits if w.tid == owner.tid), None)
    if wait is not None:
        sleeps_in += f" on a {wait.kind}" + (
            f" ({condvar_name(image, wait.futex)})" if wait.kind is WaitKind.CONDVAR else ""
        )
    # the program's innermost function found on the stack, library frames skipped; without
    # unwinding, a stale return address can slip in (see call_chain): a hint, not a proof
    caller = next(
        (
            f.function
            for f, _ in zip(call_chain(image, mem, owner), range(_MAX_FRAMES), strict=False)
            if f.function and image.module_at(f.address) is image.exe
        ),
        "",
    )
    return sleeps_in, caller


def condvar_name(image: ProcessImage, futex: int) -> str:
    """A condition variable's symbol (its futex word lies inside ``pthread_cond_t``)."""
    name = image.symbols(image.exe).name_of(futex - image.exe.bias, function=False)
    if name is not None:
        return name.split("+")[0]
    return f"condition variable at {futex:#x}"


def condvar_lines(image: ProcessImage, waits: Iterable[FutexWait]) -> list[str]:
    """Threads asleep on a condition variable, named where a symbol covers it. Evidence,
    not proof: that nobody will ever signal it is not shown from memory alone."""
    return [
        f"thread {w.tid} ({w.thread_name}) waits on condition variable "
        f"{condvar_name(image, w.futex)}"
        for w in waits
        if w.kind is WaitKind.CONDVAR
    ]


def condvar_waits(
    pid: int, symbols: SymbolTable | None = None, *, debug_root: Path | None = DEBUG_ROOT
) -> list[str]:
    """One read of ``pid``: its threads asleep on a condition variable (``condvar_lines``)."""
    require_x86_64()
    require_alive(pid)
    image = ProcessImage.read(pid, symbols, debug_root=debug_root)
    with ProcessMemory(pid) as mem:
        _, waits = _snapshot(pid, image, mem)
    return condvar_lines(image, waits)


def _on_condvar(waits: Iterable[FutexWait], tid: int) -> bool:
    return any(w.tid == tid and w.kind is WaitKind.CONDVAR for w in waits)


def _outlast_condvar_waits(
    pid: int,
    image: ProcessImage,
    mem: ProcessMemory,
    candidates: dict[tuple[int, int], _Candidate],
    started: float,
    proof: LeakProof,
) -> tuple[dict[tuple[int, int], _Candidate], float]:
    """Keep reading while an owner that sleeps on a condition variable has held for less
    than ``CONDVAR_MIN_HOLD_S``; drop those that moved (see CONDVAR_MIN_HOLD_S)."""
    if not candidates:  # nothing left to prove: no extra read
        return candidates, time.monotonic() - started
    _, waits = _snapshot(pid, image, mem)
    if not any(_on_condvar(waits, owner) for _, owner in candidates):
        return candidates, time.monotonic() - started
    while candidates and time.monotonic() - started < CONDVAR_MIN_HOLD_S:
        time.sleep(CONDVAR_READ_GAP_S)
        samples, waits = _snapshot(pid, image, mem)
        now = _candidates(samples, waits)
        candidates = {
            key: old
            for key, old in candidates.items()
            if key in now and _still(old.owner, samples.get(key[1]))
        }
    held = time.monotonic() - started
    if not candidates:
        proof.notes.append(
            f"an owner asleep on a condition variable moved within {held * 1000:.0f} ms"
        )
    return candidates, held


def find_leaked_lock(
    pid: int,
    symbols: SymbolTable | None = None,
    *,
    debug_root: Path | None = DEBUG_ROOT,
    hold_s: float = MIN_HOLD_S,
    snapshots: int = SNAPSHOTS,
) -> LeakProof:
    """Read ``pid`` ``snapshots`` times over ``hold_s`` and prove its leaked locks (see the
    module docstring). Costs ``hold_s`` of waiting plus a few ms per read; returns at the
    first read that leaves no candidate. Raises ``ProcessGone`` if the process exits."""
    require_x86_64()
    require_alive(pid)
    image = ProcessImage.read(pid, symbols, debug_root=debug_root)
    snapshots = max(2, snapshots)
    gap_s = hold_s / (snapshots - 1)
    with ProcessMemory(pid) as mem:
        samples, waits = _snapshot(pid, image, mem)
        first_waits = waits
        started = time.monotonic()
        candidates = _candidates(samples, waits)
        contended = len({w.futex for w in waits if w.is_edge})
        proof = LeakProof(pid, [], condvar_lines(image, waits), hold_s, contended=contended)
        for _ in range(snapshots - 1):
            if not candidates:
                return proof
            time.sleep(gap_s)
            samples, waits = _snapshot(pid, image, mem)
            now = _candidates(samples, waits)
            kept: dict[tuple[int, int], _Candidate] = {}
            for key, old in candidates.items():
                new = now.get(key)
                data = mem.read(key[0], 20)
                if (
                    new is None
                    or not _still(old.owner, samples.get(key[1]))
                    or data is None
                    or MutexState.parse(data).owner != key[1]
                ):
                    continue
                both = {t: n for t, n in old.waiters.items() if t in new.waiters}
                if both:
                    kept[key] = _Candidate(old.owner, both, old.mutex)
            candidates = kept
        held = time.monotonic() - started
        if held < hold_s:
            proof.notes.append(f"reads spanned {held * 1000:.0f} ms < {hold_s * 1000:.0f} ms")
            return proof
        candidates, held = _outlast_condvar_waits(pid, image, mem, candidates, started, proof)
        for (mutex, owner), entry in sorted(candidates.items()):
            sleeps_in, code = _where(image, mem, entry.owner, first_waits)
            proof.leaks.append(
                LeakedLock(
                    mutex=mutex,
                    lock=lock_name(image, mutex, owner),
                    owner=owner,
                    owner_name=entry.owner.name,
                    sleeps_in=sleeps_in,
                    owner_code=code,
                    waiters=tuple(sorted(entry.waiters.items())),
                    held_s=held,
                )
            )
    return proof
