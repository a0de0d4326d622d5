"""Prove memcached's listener lost wake-up from the process state, without waiting.

In the lost wake-up the listener has stored ``allow_new_conns = false`` after every
client closed, so its 10 ms ``maxconns_handler`` timer polls forever: only a worker's
``conn_close()`` stores ``true`` again, and no connection is left to close. Proven when,
in two snapshots ``gap_s`` apart, each read in this order:

1. no client socket is open (only listening sockets and the verifier's own held
   connection, which it never closes while checking; a socket the TCP table no longer
   lists, e.g. reset by its client, still counts as a client);
2. the main (listener) thread sleeps in ``epoll_wait``/``epoll_pwait``, every other thread
   sleeps in a syscall, and no thread waits for a mutex (see ``futex_wait``);
3. ``allow_new_conns`` (read from /proc/PID/mem at its symbol's address plus the load
   bias, with the size ``nm -S`` gives: 1 byte, ``bool``, in 1.6.18) is false;

and the held connection's ``stats``, read before the first snapshot and after the second,
says ``accepting_conns 0`` both times with the same ``listen_disabled_num``, and the fd
table is not full. The order closes the race: a worker still inside ``conn_close`` when
the sockets were read is, when its thread is read, either running (1 fails) or done, and
then its store of ``true`` is what step 3 reads. The unchanged counter makes the two
reads of false one interval of false: every store of false follows its increment of
``listen_disabled_num`` in ``do_accept_new_conns`` (the listener is in ``epoll_wait`` at
the first snapshot, so that increment falls between the two stats), so a flag stored true
and false again between the snapshots moves the counter. Without it a fixed server that
re-enables accepting and saturates again within the gap (1,500 clients on ``-c 24``) was
once taken for hung. Saturation is never proven: a full fd table or any client socket
fails it, and a server that merely drains has clients by definition.
Measured (benchmarks/proof_latency.py --runs 10): 33 ms median (p90 36, 100 calls) on a
hung 1.6.18, 25 of them the gap, two stats round trips included;
on a healthy server saturated for 12 s and told ``accepting_conns 0`` on purpose, never
proven (tests/test_waitfor.py).
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from verifier.evidence import procfs, sockdiag
from verifier.evidence.futex_wait import WaitKind, classify_wait
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

FLAG = "allow_new_conns"
COUNTER = "listen_disabled_num"  # stats: times accepting was disabled
_EPOLL = frozenset({232, 281, 441})  # epoll_wait, epoll_pwait, epoll_pwait2
_SNAPSHOT_TRIES = 20  # snapshots tried for one with every thread asleep (lru maintainer naps)
_RETRY_S = 0.002


class StateCheck(enum.StrEnum):
    """The outcome of the state proof: proven, or the first condition that failed."""

    PROVEN = "proven"
    NO_FLAG = "no allow_new_conns symbol"
    NO_STATS = "no stats from the held connection"
    STATS_ACCEPTING = "server reports accepting connections"
    NO_COUNTER = "no listen_disabled_num in stats"
    DISABLED_AGAIN = "accepting was disabled again between the snapshots"
    FDS_FULL = "fd table full"
    CLIENTS_LEFT = "client connections left"
    MAIN_NOT_POLLING = "listener not polling"
    WAITING_ON_LOCK = "a thread waits for a mutex"
    THREADS_BUSY = "threads running"
    ACCEPTING = "allow_new_conns is true"


@dataclass(frozen=True)
class LostWakeupProof:
    check: StateCheck
    reason: str  # one line: the facts that prove it, or why it is not proven
    allow_new_conns: int | None = None
    accepting_conns: str | None = None
    client_sockets: tuple[str, ...] = ()
    open_fds: int | None = None
    fd_limit: int | None = None
    listen_disabled_num: str | None = None  # from the last stats read
    elapsed_s: float = 0.0

    @property
    def proven(self) -> bool:
        return self.check is StateCheck.PROVEN

    @property
    def hang_class(self) -> HangClass | None:
        return HangClass.LOST_WAKEUP if self.proven else None

    @property
    def proof(self) -> HangProof | None:
        return HangProof.STATE if self.proven else None

    def to_json(self) -> dict[str, object]:
        return {
            "proven": self.proven,
            "check": str(self.check),
            "reason": self.reason,
            "hang_class": str(self.hang_class) if self.hang_class else None,
            "allow_new_conns": self.allow_new_conns,
            "accepting_conns": self.accepting_conns,
            "client_sockets": list(self.client_sockets),
            "open_fds": self.open_fds,
            "fd_limit": self.fd_limit,
            "listen_disabled_num": self.listen_disabled_num,
            "elapsed_ms": round(self.elapsed_s * 1000, 3),
        }


StatsReader = Callable[[], Mapping[str, str] | None]  # None: no answer


def prove_lost_wakeup(
    pid: int,
    symbols: SymbolTable | None,
    read_stats: StatsReader,
    held_local_port: int | None,
    *,
    gap_s: float = 0.025,
    debug_root: Path | None = DEBUG_ROOT,
) -> LostWakeupProof:
    """Is ``pid`` (a memcached) in the listener lost wake-up? Never stops the process.

    ``read_stats``: sends ``stats`` on the verifier's held connection (None if it gave no
    answer), called before the first snapshot and after the second; ``held_local_port``:
    that connection's local port, so its socket is not taken for a client. ``gap_s``
    (25 ms: more than two 10 ms maxconns ticks) separates the two snapshots. Raises
    ``ProcessGone`` if the process exits.
    """
    require_x86_64()
    require_alive(pid)
    started = time.perf_counter()
    image = ProcessImage.read(pid, symbols, debug_root=debug_root)
    table = symbols if symbols is not None else image.symbols(image.exe)
    flag = table.symbol(FLAG)
    stats = read_stats()
    fds = procfs.fd_usage(pid)

    def verdict(
        check: StateCheck,
        reason: str,
        allow_new_conns: int | None = None,
        clients: tuple[str, ...] = (),
    ) -> LostWakeupProof:
        return LostWakeupProof(
            check,
            reason,
            allow_new_conns=allow_new_conns,
            accepting_conns=None if stats is None else stats.get("accepting_conns"),
            client_sockets=clients,
            open_fds=fds.open if fds else None,
            fd_limit=fds.limit if fds else None,
            listen_disabled_num=None if stats is None else stats.get(COUNTER),
            elapsed_s=time.perf_counter() - started,
        )

    if flag is None or flag.size not in (1, 2, 4, 8):
        return verdict(StateCheck.NO_FLAG, f"the executable has no {FLAG} variable to read")
    disabled = _disabled_count(stats)
    if isinstance(disabled, tuple):
        return verdict(*disabled)
    if fds is not None and fds.exhausted:
        return verdict(
            StateCheck.FDS_FULL,
            f"every file descriptor is in use ({fds.open} of {fds.limit}): saturation",
        )
    refused = _flag_stays_false(
        pid, image, flag.address + image.exe.bias, flag.size, held_local_port, gap_s
    )
    if refused is not None:
        return verdict(*refused)
    stats = read_stats()
    again = _disabled_count(stats)
    if isinstance(again, tuple):
        return verdict(*again)
    if again != disabled:
        return verdict(
            StateCheck.DISABLED_AGAIN,
            f"{COUNTER} went from {disabled} to {again}: accepting was re-enabled and "
            "disabled again between the snapshots",
        )
    # the timer is named only if this build has it (a patched tree may not)
    polls = "polls its maxconns timer" if table.symbol("maxconns_handler") else "sleeps"
    return verdict(
        StateCheck.PROVEN,
        f"listener {polls} with {FLAG}=0 throughout (accepting_conns 0, "
        f"{COUNTER} unchanged), no client connection is left to close and every other "
        "thread sleeps: nothing can re-enable accepting",
        allow_new_conns=0,
    )


def _flag_stays_false(
    pid: int,
    image: ProcessImage,
    address: int,
    size: int,
    held_local_port: int | None,
    gap_s: float,
) -> tuple[StateCheck, str, int | None, tuple[str, ...]] | None:
    """None when two snapshots ``gap_s`` apart each find no client socket, every thread
    asleep with the listener polling, and the flag false (read in that order); else the
    failed check, why, the flag's value and the client sockets."""
    with ProcessMemory(pid) as mem:
        for snapshot in (1, 2):
            if snapshot == 2:
                time.sleep(gap_s)
            clients = tuple(client_sockets(pid, held_local_port))
            if clients:
                left = f"{len(clients)} client connection(s) left that could close and re-enable"
                return StateCheck.CLIENTS_LEFT, f"{left} accepting", None, clients
            failed = _threads_quiet(image, mem, pid)
            if failed is not None:
                return *failed, None, ()
            value = mem.read_int(address, size)
            if value is None:
                return StateCheck.NO_FLAG, f"{FLAG} at {address:#x} is unreadable", None, ()
            if value:
                return (
                    StateCheck.ACCEPTING,
                    f"{FLAG} is {value}: a wake-up was delivered",
                    value,
                    (),
                )
    return None


def _disabled_count(stats: Mapping[str, str] | None) -> str | tuple[StateCheck, str]:
    """``listen_disabled_num`` when the held connection's stats say accepting is
    disabled; else the failed check and why."""
    if stats is None:
        return StateCheck.NO_STATS, "the held connection gave no stats"
    accepting = stats.get("accepting_conns")
    if accepting != "0":
        return StateCheck.STATS_ACCEPTING, f"stats say accepting_conns {accepting}"
    if COUNTER not in stats:
        return StateCheck.NO_COUNTER, f"stats has no {COUNTER}: one interval of false is unproven"
    return stats[COUNTER]


def _threads_quiet(
    image: ProcessImage, mem: ProcessMemory, pid: int
) -> tuple[StateCheck, str] | None:
    """None as soon as one snapshot has the listener polling, every thread asleep and no
    mutex wait; else the failed check and why, from the last snapshot tried."""
    failure: tuple[StateCheck, str] = (StateCheck.THREADS_BUSY, "no snapshot taken")
    for attempt in range(_SNAPSHOT_TRIES):
        if attempt:
            time.sleep(_RETRY_S)
        samples = [s for tid in thread_ids(pid) if (s := sample_thread(pid, tid)) is not None]
        found = _quiet(image, mem, pid, samples)
        if found is None:
            return None
        failure = found
    return failure


def _quiet(
    image: ProcessImage, mem: ProcessMemory, pid: int, samples: list[ThreadSample]
) -> tuple[StateCheck, str] | None:
    require_alive(pid)
    live = {s.tid for s in samples}
    main = next((s for s in samples if s.tid == pid), None)
    if main is None or not main.sleeping or main.syscall not in _EPOLL:
        where = "running" if main is None or main.syscall is None else f"syscall {main.syscall}"
        return StateCheck.MAIN_NOT_POLLING, f"the listener is not in epoll_wait ({where})"
    for sample in samples:
        if not sample.sleeping:
            return StateCheck.THREADS_BUSY, f"thread {sample.tid} ({sample.name}) is running"
        if sample.syscall == SYS_FUTEX:
            wait = classify_wait(image, mem, sample, live)
            if wait.kind in (WaitKind.MUTEX, WaitKind.TIMED_MUTEX, WaitKind.LIBC_LOCK):
                return StateCheck.WAITING_ON_LOCK, wait.describe()
    return None


def client_sockets(pid: int, held_local_port: int | None) -> list[str]:
    """Sockets of ``pid`` that are neither listening nor the held connection, as
    ``fd state local->remote``; a socket absent from the TCP tables counts too.

    The table comes from netlink sock_diag (see ``sockdiag``: /proc/net/tcp cost ~24 ms
    per read under the flood), or from /proc/net/tcp if netlink is refused."""
    sockets: dict[int, int] = {}  # fd -> inode
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        require_alive(pid)
        entries = []
    for entry in entries:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        if target.startswith("socket:["):
            sockets[int(entry)] = int(target[8:-1])
    try:
        table = sockdiag.tcp_sockets()
        known = {
            fd: (table[inode].state, table[inode].local, table[inode].remote)
            for fd, inode in sockets.items()
            if inode in table
        }
    except OSError:
        known = {s.fd: (s.state, s.local, s.remote) for s in procfs.open_sockets(pid)}
    clients: list[str] = []
    for fd in sorted(sockets):
        if fd not in known:
            clients.append(f"{fd} unlisted socket:[{sockets[fd]}]")
            continue
        state, local, remote = known[fd]
        held = held_local_port and remote.rsplit(":", 1)[-1] == str(held_local_port)
        if state != "LISTEN" and not held:
            clients.append(f"{fd} {state} {local}->{remote}")
    return clients
