"""Prove a deadlock from the live process: a wait-for graph of mutexes, and its cycle.

Every thread asleep in ``futex`` on a glibc mutex (see ``futex_wait``) is an edge to the
mutex's owner. A cycle is a deadlock: one thread waiting for a mutex it owns is a
``self-deadlock``, two or more threads a ``deadlock``. Nothing is stopped or attached:
/proc and ``pread`` on /proc/PID/mem only.

The reads are not atomic, so a cycle is confirmed by a second read: pass one reads every
thread (syscall, CPU time), then the mutexes; pass two reads the cycle's mutexes again,
then its threads. If every cycle thread is asleep on the same futex with an unchanged
CPU time in both passes, none of them ran between its two reads, and every mutex read
(all inside that interval) named a sleeping owner that cannot have released it: at that
instant each thread waited for a mutex held by the next. A cycle whose threads ran is
read again (up to ``attempts`` times), never reported.

Cost (benchmarks/proof_latency.py, 2 shared cores under other load): 4 ms median, 11 ms
p90, over 500 proofs on ten ABBA-deadlocked memcacheds (8 threads), against 660 ms for
one gdb dump of all threads; the first proof after ``warm_up`` 8 ms. Symbol tables are
cached per file: call ``warm_up`` on the healthy server (~0.3 s, mostly libc's debug file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from verifier.evidence.futex_wait import FutexWait, MutexState, classify_wait
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
from verifier.vocabulary import HangClass, HangProof


@dataclass(frozen=True)
class Edge:
    """``waiter`` sleeps on ``mutex``, which ``owner`` holds."""

    waiter: int
    waiter_name: str
    owner: int
    owner_name: str
    mutex: int
    lock: str  # the mutex's name: a symbol (``stats_lock``, ``thread_locks+0x40``) or address
    mutex_kind: str  # normal, errorcheck robust, ...
    code: str  # the waiting code, innermost first

    def to_json(self) -> dict[str, object]:
        return {
            "waiter": self.waiter,
            "waiter_name": self.waiter_name,
            "owner": self.owner,
            "owner_name": self.owner_name,
            "mutex": f"{self.mutex:#x}",
            "lock": self.lock,
            "mutex_kind": self.mutex_kind,
            "code": self.code,
        }


@dataclass
class WaitForGraph:
    """Who waits for whom in one process, and the cycle that proves a deadlock (if any)."""

    pid: int
    waits: list[FutexWait]
    edges: list[Edge]
    cycles: list[list[Edge]]  # confirmed cycles only
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    attempts: int = 1
    image: ProcessImage | None = field(default=None, repr=False)

    def cycle(self) -> list[Edge] | None:
        """The first confirmed cycle (starting at its lowest TID), or None."""
        return self.cycles[0] if self.cycles else None

    @property
    def hang_class(self) -> HangClass | None:
        cycle = self.cycle()
        if cycle is None:
            return None
        return HangClass.SELF_DEADLOCK if len(cycle) == 1 else HangClass.DEADLOCK

    @property
    def proof(self) -> HangProof | None:
        return HangProof.CYCLE if self.cycles else None

    @property
    def involved_tids(self) -> tuple[int, ...]:
        cycle = self.cycle()
        return tuple(edge.waiter for edge in cycle) if cycle else ()

    @property
    def not_understood(self) -> list[str]:
        """One line per futex waiter that is not an edge, with the reason."""
        return [wait.describe() for wait in self.waits if not wait.is_edge]

    def describe_cycle(self) -> str:
        """``thread 1234 (memcached) holds conn_lock, waits stats_lock; thread 1240 ...``."""
        cycle = self.cycle()
        if cycle is None:
            return "no cycle in the wait-for graph"
        if len(cycle) == 1:
            edge = cycle[0]
            return (
                f"thread {edge.waiter} ({edge.waiter_name}) holds {edge.lock}, "
                f"waits {edge.lock} (itself)"
            )
        return "; ".join(
            f"thread {edge.waiter} ({edge.waiter_name}) holds {cycle[i - 1].lock}, "
            f"waits {edge.lock}"
            for i, edge in enumerate(cycle)
        )

    def lock_name(self, address: int) -> str:
        if self.image is None:
            return f"mutex {address:#x}"
        owner = next((e.owner for e in self.edges if e.mutex == address), None)
        return lock_name(self.image, address, owner)

    def to_json(self) -> dict[str, object]:
        cycle = self.cycle()
        return {
            "pid": self.pid,
            "hang_class": str(self.hang_class) if self.hang_class else None,
            "proof": str(self.proof) if self.proof else None,
            "cycle": [edge.to_json() for edge in cycle] if cycle else None,
            "cycle_text": self.describe_cycle() if cycle else None,
            "involved_tids": list(self.involved_tids),
            "other_cycles": [[e.to_json() for e in c] for c in self.cycles[1:]],
            "edges": [edge.to_json() for edge in self.edges],
            "waits": [wait.to_json() for wait in self.waits],
            "not_understood": self.not_understood,
            "notes": self.notes,
            "attempts": self.attempts,
            "elapsed_ms": round(self.elapsed_s * 1000, 3),
        }


def lock_name(image: ProcessImage, address: int, owner: int | None = None) -> str:
    """A mutex's name: its symbol (``name`` or ``name+0x40``) in the executable or a library,
    else where it lives (heap, stack) by address and owner."""
    # .bss past the file's last page is an anonymous mapping: try the executable's data first
    exe_name = image.symbols(image.exe).name_of(address - image.exe.bias, function=False)
    if exe_name is not None:
        return exe_name
    module = image.module_at(address)
    if module is not None:
        name = image.symbols(module).name_of(address - module.bias, function=False)
        if name is not None:
            return name if module is image.exe else f"{module.name}:{name}"
        return f"{module.name}+{address - module.bias:#x}"
    mapping = image.mapping_at(address)
    where = "stack" if mapping is not None and mapping.path.startswith("[stack") else "heap"
    held = f" (owner {owner})" if owner else ""
    return f"{where} mutex {address:#x}{held}"


def warm_up(
    pid: int, symbols: SymbolTable | None = None, *, debug_root: Path | None = DEBUG_ROOT
) -> int:
    """Load (and cache) the symbol tables of every file ``pid`` executes code from, so a
    later proof costs milliseconds. Call it once on the healthy server: measured here,
    ~0.3 s for memcached (libc's 4 MB debug file dominates). Also fails early, with
    ``ProcessUnreadable``, when /proc does not let this user read the process. Returns the
    number of files loaded."""
    require_x86_64()
    image = ProcessImage.read(pid, symbols, debug_root=debug_root)
    seen: set[int] = set()
    for mapping in image.maps:
        module = image.module_at(mapping.start) if "x" in mapping.perms else None
        if module is not None and module.inode not in seen:
            seen.add(module.inode)
            image.symbols(module)
    with ProcessMemory(pid):
        pass
    return len(seen)


def find_deadlock(
    pid: int,
    symbols: SymbolTable | None = None,
    *,
    debug_root: Path | None = DEBUG_ROOT,
    attempts: int = 3,
) -> WaitForGraph:
    """Read the wait-for graph of ``pid`` and confirm its cycles; never stops the process.

    ``symbols``: the executable's table (``SymbolTable.load(binary, symbol_file)``); None
    reads it from /proc/PID/exe (or its build-id debug file). ``debug_root``: where
    ``.build-id`` debug files are looked up (libc's names its lock-wait function); None
    uses exported symbols only. Raises ``ProcessGone`` if the process exits.
    """
    require_x86_64()
    require_alive(pid)
    started = time.perf_counter()
    image = ProcessImage.read(pid, symbols, debug_root=debug_root)
    notes: list[str] = []
    attempts = max(1, attempts)
    with ProcessMemory(pid) as mem:
        for attempt in range(1, attempts + 1):
            samples = _sample_all(pid)
            live = set(samples)
            waits = [
                classify_wait(image, mem, sample, live)
                for sample in samples.values()
                if sample.sleeping and sample.syscall == SYS_FUTEX
            ]
            by_waiter = {wait.tid: wait for wait in waits if wait.is_edge}
            edges = [_edge(image, wait, samples) for wait in by_waiter.values()]
            found = _cycles(by_waiter)
            confirmed = [c for c in found if _confirm(pid, mem, [by_waiter[t] for t in c], samples)]
            if len(confirmed) < len(found):
                notes.append(
                    f"attempt {attempt}: {len(found) - len(confirmed)} cycle(s) seen, but their "
                    "threads ran between two reads: not a deadlock (read again)"
                )
            if confirmed or not found or attempt == attempts:
                edge_of = {edge.waiter: edge for edge in edges}
                return WaitForGraph(
                    pid=pid,
                    waits=waits,
                    edges=edges,
                    cycles=[[edge_of[t] for t in c] for c in confirmed],
                    notes=notes,
                    elapsed_s=time.perf_counter() - started,
                    attempts=attempt,
                    image=image,
                )
    raise AssertionError("unreachable")  # the loop returns on its last attempt


def _sample_all(pid: int) -> dict[int, ThreadSample]:
    samples: dict[int, ThreadSample] = {}
    for tid in thread_ids(pid):
        sample = sample_thread(pid, tid)
        if sample is not None:
            samples[tid] = sample
    if not samples:
        require_alive(pid)
    return samples


def _edge(image: ProcessImage, wait: FutexWait, samples: dict[int, ThreadSample]) -> Edge:
    assert wait.owner is not None and wait.mutex is not None
    return Edge(
        waiter=wait.tid,
        waiter_name=wait.thread_name,
        owner=wait.owner,
        owner_name=samples[wait.owner].name if wait.owner in samples else "?",
        mutex=wait.futex,
        lock=lock_name(image, wait.futex, wait.owner),
        mutex_kind=wait.mutex.describe_kind(),
        code=wait.code_text(),
    )


def _cycles(by_waiter: dict[int, FutexWait]) -> list[list[int]]:
    """Cycles of the graph (each thread waits for one mutex, so at most one out-edge),
    each as TIDs starting at its lowest, in order of that TID."""
    cycles: list[list[int]] = []
    done: set[int] = set()
    for start in sorted(by_waiter):
        path: list[int] = []
        node: int | None = start
        while node is not None and node in by_waiter and node not in done and node not in path:
            path.append(node)
            node = by_waiter[node].owner
        if node is not None and node in path:
            cycle = path[path.index(node) :]
            lowest = cycle.index(min(cycle))
            cycles.append(cycle[lowest:] + cycle[:lowest])
        done.update(path)
    return sorted(cycles, key=lambda c: c[0])


def _confirm(
    pid: int, mem: ProcessMemory, waits: list[FutexWait], first: dict[int, ThreadSample]
) -> bool:
    """Second pass: mutexes first, then threads (see the module docstring)."""
    for wait in waits:
        data = mem.read(wait.futex, 20)
        if data is None or MutexState.parse(data) != wait.mutex:
            return False
    for wait in waits:
        before, now = first[wait.tid], sample_thread(pid, wait.tid)
        if (
            now is None
            or not now.sleeping
            or now.syscall != SYS_FUTEX
            or now.args[:3] != before.args[:3]
            or now.pc != before.pc
            or before.run_ns is None
            or now.run_ns != before.run_ns
        ):
            return False
    return True
