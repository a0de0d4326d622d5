"""Flood counters: the shared per-process layout, the aggregated snapshot, the progress line.

Each worker process owns one row of ``Field`` slots in a shared ``RawArray`` of uint64 and
overwrites it from its local counters every tick; the parent sums the rows. No locks: a
row may be read mid-update, which only skews a snapshot by one tick.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass


class Field(enum.IntEnum):
    """Slots of one process's row."""

    STATE = 0  # a ProcState
    ACK = 1  # sequence number of the last control command the process has carried out
    ACTIVE = 2  # sockets open or connecting now
    ACTIVE_MS = 3  # flooding time so far (pauses excluded)
    CYCLES = 4  # connection attempts finished (successful or not)
    CONNECTS = 5  # of which connected
    OPS = 6  # commands answered normally
    BYTES_OUT = 7
    BYTES_IN = 8
    # errors, one per ErrorKind (same order)
    ERR_REFUSED = 9
    ERR_CONNECT_TIMEOUT = 10
    ERR_REPLY_TIMEOUT = 11
    ERR_RESET = 12
    ERR_CLOSED = 13
    ERR_MAXCONNS = 14
    ERR_SERVER = 15
    ERR_LOCAL = 16
    ERR_OTHER = 17
    UVLOOP = 18  # 1 if the process runs uvloop (not summed)


N_FIELDS = len(Field)


class ProcState(enum.IntEnum):
    STARTING = 0
    RUNNING = 1
    PAUSED = 2  # drained: no socket open
    DONE = 3  # bound reached or stopped; drained
    FAILED = 4  # crashed (traceback on its stderr)


class ErrorKind(enum.StrEnum):
    REFUSED = "refused"  # connect: ECONNREFUSED (nobody listening)
    CONNECT_TIMEOUT = "connect_timeout"  # connect: no SYN-ACK in time (backlog full)
    REPLY_TIMEOUT = "reply_timeout"  # connected, no complete reply in time (not accepted)
    RESET = "reset"  # ECONNRESET / EPIPE
    CLOSED = "closed"  # server closed before a complete reply
    MAXCONNS = "maxconns"  # "ERROR Too many open connections"
    SERVER_ERROR = "server_error"  # any other ERROR / SERVER_ERROR / CLIENT_ERROR line
    LOCAL = "local"  # client-side resource error: EMFILE, EADDRNOTAVAIL (ports), ENOBUFS
    OTHER = "other"

    @property
    def field(self) -> Field:
        return Field(Field.ERR_REFUSED + list(ErrorKind).index(self))


@dataclass(frozen=True)
class ErrorCounts:
    refused: int = 0
    connect_timeout: int = 0
    reply_timeout: int = 0
    reset: int = 0
    closed: int = 0
    maxconns: int = 0
    server_error: int = 0
    local: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def as_dict(self) -> dict[ErrorKind, int]:
        return {kind: getattr(self, kind.value) for kind in ErrorKind}

    def nonzero(self) -> dict[ErrorKind, int]:
        return {kind: n for kind, n in self.as_dict().items() if n}


@dataclass(frozen=True)
class FloodStats:
    elapsed_s: float  # wall time since start()
    active_s: float  # flooding time (pauses excluded), the process that flooded longest
    loaded_s: float  # time every process flooded (pauses excluded): a dead one stops it
    cycles: int  # connection attempts finished
    connects: int  # of which connected
    ops: int  # commands answered normally
    bytes_sent: int
    bytes_received: int
    errors: ErrorCounts
    open_connections: int  # sockets open or connecting right now
    interval_s: float  # the rates below are over this last interval (since previous snapshot)
    cycles_per_s: float
    ops_per_s: float
    processes: int
    processes_alive: int
    processes_failed: int
    paused: bool  # every live process has drained after pause()
    finished: bool  # every process is done (bound reached or stopped)
    uvloop: bool  # every process runs uvloop

    @property
    def mean_cycles_per_s(self) -> float:
        return self.cycles / self.active_s if self.active_s > 0 else 0.0

    @property
    def mean_ops_per_s(self) -> float:
        return self.ops / self.active_s if self.active_s > 0 else 0.0

    def render(self) -> str:
        return render_progress(self)


def render_progress(stats: FloodStats) -> str:
    """One line, e.g. ``12.3s  cycles 6,120/s  ops 6,300/s  open 380  errors: maxconns 12``."""
    errors = stats.errors.nonzero()
    error_text = ", ".join(f"{kind.value} {n:,}" for kind, n in errors.items()) or "none"
    state = "  [failed]" if stats.processes_failed else ""
    if stats.finished:
        state += "  [done]"
    elif stats.paused:
        state += "  [paused]"
    return (
        f"{stats.elapsed_s:.1f}s  cycles {stats.cycles_per_s:,.0f}/s  ops {stats.ops_per_s:,.0f}/s"
        f"  open {stats.open_connections:,}  errors: {error_text}{state}"
    )


def aggregate(
    raw: Sequence[int],
    *,
    processes: int,
    elapsed_s: float,
    alive: Sequence[bool],
    previous: FloodStats | None,
) -> FloodStats:
    """Sum the rows of ``raw`` (processes x N_FIELDS) into a snapshot; rates since ``previous``."""
    rows = [raw[i * N_FIELDS : (i + 1) * N_FIELDS] for i in range(processes)]

    def total(field: Field) -> int:
        return sum(row[field] for row in rows)

    states = [ProcState(row[Field.STATE]) for row in rows]
    done = [
        s in (ProcState.DONE, ProcState.FAILED) or not a for s, a in zip(states, alive, strict=True)
    ]
    live = [s for s, d in zip(states, done, strict=True) if not d]
    errors = ErrorCounts(**{kind.value: total(kind.field) for kind in ErrorKind})
    cycles, ops = total(Field.CYCLES), total(Field.OPS)
    if previous is None:
        interval, d_cycles, d_ops = elapsed_s, cycles, ops
    else:
        interval = elapsed_s - previous.elapsed_s
        d_cycles, d_ops = cycles - previous.cycles, ops - previous.ops
    return FloodStats(
        elapsed_s=elapsed_s,
        active_s=max((row[Field.ACTIVE_MS] for row in rows), default=0) / 1000,
        loaded_s=min((row[Field.ACTIVE_MS] for row in rows), default=0) / 1000,
        cycles=cycles,
        connects=total(Field.CONNECTS),
        ops=ops,
        bytes_sent=total(Field.BYTES_OUT),
        bytes_received=total(Field.BYTES_IN),
        errors=errors,
        open_connections=total(Field.ACTIVE),
        interval_s=interval,
        cycles_per_s=d_cycles / interval if interval > 0 else 0.0,
        ops_per_s=d_ops / interval if interval > 0 else 0.0,
        processes=processes,
        processes_alive=sum(alive),
        processes_failed=sum(s == ProcState.FAILED for s in states),
        paused=bool(live) and all(s == ProcState.PAUSED for s in live),
        finished=all(done),
        uvloop=bool(rows) and all(row[Field.UVLOOP] for row in rows),
    )
