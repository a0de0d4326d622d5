"""What an unstretched flood showed: shared variables, failing calls, contended mutexes.

A ``Discovery`` is the typed record of one discovery run (``verifier.run.discovery``
makes it from a live server); ``points()`` turns it into the stretch points the planner
draws from. It holds offsets of one binary and names that survive a rebuild; it is saved
as JSON (the tests replay a recorded one).

Filters, and why:
- a variable is a candidate only when two or more threads stored to it during the
  flood (one writer cannot race with itself on that variable; readers are not seen),
  and it is not a mutex the lock probe saw contended (its lock point covers it);
- a failing call is any wrapped call that returned -1 (any errno) at least once;
- a mutex is a candidate when an acquisition found it taken (trylock said EBUSY) and it
  can be named across rebuilds: a data object of the executable, or a heap mutex
  locked from a function of the executable (mutexes only libevent locks are left out).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from verifier.amplify.auto.points import Point, PointKind, ThreadKind, family
from verifier.amplify.auto.symbols import DataSymbol, symbol_at
from verifier.amplify.counters import AmplifierStatus
from verifier.errors import BadInput
from verifier.util.atomic import write_json

FORMAT = 1
Locate = Callable[[int], str]  # absolute code address -> "file:line (function)" or ""


@dataclass(frozen=True)
class ThreadWrites:
    tid: int
    name: str  # thread name (comm)
    main: bool  # the process's own TID: the thread that loaded the library
    writes: int


@dataclass(frozen=True)
class VariableFinding:
    """Stores to one data object, per thread, while it was watched."""

    symbol: str  # nm name
    key: str  # stable name (see symbols.py)
    symoff: int  # watched address (offset in the executable)
    size: int
    watch_len: int
    window_s: float  # total time it was watched
    threads: tuple[ThreadWrites, ...]  # threads that stored to it

    @property
    def main_writes(self) -> int:
        return sum(t.writes for t in self.threads if t.main)

    @property
    def other_writes(self) -> int:
        return sum(t.writes for t in self.threads if not t.main)

    @property
    def writers(self) -> int:
        return sum(1 for t in self.threads if t.writes > 0)

    @property
    def shared(self) -> bool:
        return self.writers >= 2


@dataclass(frozen=True)
class CallFinding:
    functions: tuple[str, ...]  # the family (accept|accept4 together)
    errno_name: str
    main: int  # failures on the main thread
    other: int  # on every other thread
    where: str  # a call site seen

    @property
    def name(self) -> str:
        return f"{'|'.join(self.functions)}:{self.errno_name}"


@dataclass(frozen=True)
class MutexFinding:
    name: str  # data object key, or "site:FUNCTION" for a heap mutex
    symbol: str  # nm name ("" on the heap)
    symoff: int | None  # start of the object holding the mutex (None: heap)
    length: int  # the object's size (a whole array of mutexes matches)
    site: int | None  # heap: call-site offset the rule matches
    contended: int
    main_contended: int
    wait_ns: int
    where: str  # a call site seen


@dataclass(frozen=True)
class Discovery:
    binary: str
    seconds: float  # the discovery flood, wall time
    watch_seconds: float  # of it, time spent counting stores
    scanned: int  # data objects watched
    threads: int  # threads of the server
    variables: tuple[VariableFinding, ...]  # every object stored to at all
    calls: tuple[CallFinding, ...]
    mutexes: tuple[MutexFinding, ...]
    lock_calls: int = 0
    notes: tuple[str, ...] = field(default=())

    def shared(self) -> list[VariableFinding]:
        return [v for v in self.variables if v.shared]

    def points(self) -> list[Point]:
        """Every stretch point, in a stable order (kind, name, thread)."""
        span = max(self.seconds, 1e-6)
        mutex_objects = {m.symbol for m in self.mutexes if m.symbol}
        points = [
            point
            for var in self.shared()
            if var.symbol not in mutex_objects  # a mutex: its lock point covers it
            for point in _store_points(var)
        ]
        points += [point for call in self.calls for point in _call_points(call, span)]
        points += [point for mutex in self.mutexes for point in _lock_points(mutex, span)]
        return sorted(points, key=lambda p: (p.kind, p.name, p.thread))

    # -- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "binary": self.binary,
            "seconds": self.seconds,
            "watch_seconds": self.watch_seconds,
            "scanned": self.scanned,
            "threads": self.threads,
            "lock_calls": self.lock_calls,
            "notes": list(self.notes),
            "variables": [
                {
                    "symbol": v.symbol,
                    "key": v.key,
                    "symoff": v.symoff,
                    "size": v.size,
                    "watch_len": v.watch_len,
                    "window_s": v.window_s,
                    "threads": [[t.tid, t.name, t.main, t.writes] for t in v.threads],
                }
                for v in self.variables
            ],
            "calls": [
                {
                    "functions": list(c.functions),
                    "errno": c.errno_name,
                    "main": c.main,
                    "other": c.other,
                    "where": c.where,
                }
                for c in self.calls
            ],
            "mutexes": [
                {
                    "name": m.name,
                    "symbol": m.symbol,
                    "symoff": m.symoff,
                    "length": m.length,
                    "site": m.site,
                    "contended": m.contended,
                    "main_contended": m.main_contended,
                    "wait_ns": m.wait_ns,
                    "where": m.where,
                }
                for m in self.mutexes
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Discovery:
        if data.get("format") != FORMAT:
            raise BadInput(f"discovery record format {data.get('format')!r}; expected {FORMAT}")
        try:
            return cls(
                binary=str(data["binary"]),
                seconds=float(data["seconds"]),
                watch_seconds=float(data["watch_seconds"]),
                scanned=int(data["scanned"]),
                threads=int(data["threads"]),
                lock_calls=int(data.get("lock_calls", 0)),
                notes=tuple(data.get("notes", ())),
                variables=tuple(
                    VariableFinding(
                        v["symbol"],
                        v["key"],
                        int(v["symoff"]),
                        int(v["size"]),
                        int(v["watch_len"]),
                        float(v["window_s"]),
                        tuple(
                            ThreadWrites(int(t[0]), str(t[1]), bool(t[2]), int(t[3]))
                            for t in v["threads"]
                        ),
                    )
                    for v in data["variables"]
                ),
                calls=tuple(
                    CallFinding(
                        tuple(c["functions"]),
                        c["errno"],
                        int(c["main"]),
                        int(c["other"]),
                        c["where"],
                    )
                    for c in data["calls"]
                ),
                mutexes=tuple(
                    MutexFinding(
                        m["name"],
                        m["symbol"],
                        m["symoff"],
                        int(m["length"]),
                        m["site"],
                        int(m["contended"]),
                        int(m["main_contended"]),
                        int(m["wait_ns"]),
                        m["where"],
                    )
                    for m in data["mutexes"]
                ),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BadInput(f"discovery record malformed: {exc!r}") from None

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> Discovery:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise BadInput(f"discovery record {path} not found") from None
        except json.JSONDecodeError as exc:
            raise BadInput(f"discovery record {path} is not JSON: {exc}") from None
        return cls.from_json(data)


def _store_points(var: VariableFinding) -> list[Point]:
    window = max(var.window_s, 1e-6)
    base = Point(
        PointKind.STORE,
        var.key,
        ThreadKind.ANY,
        0.0,
        symbol=var.symbol,
        symoff=var.symoff,
        length=var.watch_len,
    )
    out = []
    if var.main_writes:
        out.append(replace(base, thread=ThreadKind.MAIN, rate=var.main_writes / window))
    if var.other_writes:
        out.append(replace(base, rate=(var.main_writes + var.other_writes) / window))
    return out


def _call_points(call: CallFinding, span: float) -> list[Point]:
    base = Point(
        PointKind.CALL,
        call.name,
        ThreadKind.ANY,
        0.0,
        where=call.where,
        functions=call.functions,
        errno_name=call.errno_name,
    )
    out = []
    if call.main:
        out.append(replace(base, thread=ThreadKind.MAIN, rate=call.main / span))
    if call.other:
        out.append(replace(base, rate=(call.main + call.other) / span))
    return out


def _lock_points(mutex: MutexFinding, span: float) -> list[Point]:
    base = Point(
        PointKind.LOCK,
        mutex.name,
        ThreadKind.ANY,
        0.0,
        where=mutex.where,
        symbol=mutex.symbol,
        symoff=mutex.symoff,
        length=mutex.length,
        site=mutex.site,
    )
    out = []
    if mutex.main_contended:
        out.append(replace(base, thread=ThreadKind.MAIN, rate=mutex.main_contended / span))
    if mutex.contended > mutex.main_contended:
        out.append(replace(base, rate=mutex.contended / span))
    return out


# -- from raw measurements ------------------------------------------------------------------


def variable_findings(
    symbols: Sequence[DataSymbol],
    spans: Mapping[str, tuple[int, int]],
    counts: Mapping[str, Mapping[int, int]],
    windows: Mapping[str, float],
    thread_names: Mapping[int, str],
    main_tid: int,
) -> tuple[VariableFinding, ...]:
    """Findings for the objects stored to at all; ``counts[name][tid]`` = stores."""
    out = []
    for sym in symbols:
        per_thread = {tid: n for tid, n in counts.get(sym.name, {}).items() if n > 0}
        if not per_thread:
            continue
        symoff, length = spans[sym.name]
        writes = tuple(
            ThreadWrites(tid, thread_names.get(tid, "?"), tid == main_tid, n)
            for tid, n in sorted(per_thread.items())
        )
        out.append(
            VariableFinding(
                sym.name, sym.key, symoff, sym.size, length, windows.get(sym.name, 0.0), writes
            )
        )
    return tuple(out)


def call_findings(status: AmplifierStatus, locate: Locate) -> tuple[CallFinding, ...]:
    """Failures per (family, errno), main thread apart from the others."""
    merged: dict[tuple[tuple[str, ...], str], list[int]] = {}
    sites: dict[tuple[tuple[str, ...], str], int] = {}
    for failure in status.failures:
        key = (family(failure.function), failure.errno_name)
        counts = merged.setdefault(key, [0, 0])
        counts[0 if failure.main else 1] += failure.count
        sites.setdefault(key, failure.last_pc)
    return tuple(
        CallFinding(fns, err, main, other, locate(sites[(fns, err)]))
        for (fns, err), (main, other) in sorted(merged.items(), key=lambda kv: -sum(kv[1]))
    )


@dataclass
class _MutexGroup:
    symbol: DataSymbol | None
    site: int | None  # heap: offset of the busiest call site
    contended: int = 0
    main_contended: int = 0
    wait_ns: int = 0
    top_site: int = 0  # absolute, for naming
    top_count: int = -1


def mutex_findings(
    status: AmplifierStatus,
    symbols: Sequence[DataSymbol],
    locate: Locate,
    function_of: Callable[[int], str],
    in_executable: Callable[[int], bool],
) -> tuple[MutexFinding, ...]:
    """Contended mutexes named by their object, or by the locking function (heap)."""
    groups: dict[str, _MutexGroup] = {}
    for entry in status.mutexes:
        sym = symbol_at(symbols, entry.mutex - status.load_bias)
        if sym is not None:
            name = sym.key
        elif in_executable(entry.site):
            function = function_of(entry.site)
            if function in ("", "??"):
                continue
            name = f"site:{function}"
        else:
            continue  # a heap mutex that only a library locks: no stable name
        group = groups.setdefault(name, _MutexGroup(sym, None))
        group.contended += entry.contended
        group.main_contended += entry.main_contended
        group.wait_ns += entry.wait_ns
        if entry.contended > group.top_count:  # the busiest site names it (and the heap rule)
            group.top_site, group.top_count = entry.site, entry.contended
            if sym is None:
                group.site = entry.site - status.load_bias
    out = [
        MutexFinding(
            name=name,
            symbol=g.symbol.name if g.symbol else "",
            symoff=g.symbol.offset if g.symbol else None,
            length=g.symbol.size if g.symbol else 1,
            site=g.site,
            contended=g.contended,
            main_contended=g.main_contended,
            wait_ns=g.wait_ns,
            where=locate(g.top_site),
        )
        for name, g in groups.items()
    ]
    return tuple(sorted(out, key=lambda m: (-m.contended, m.name)))
