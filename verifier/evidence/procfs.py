"""What /proc says about a live process: each thread's state, syscall and wchan; its sockets."""

from __future__ import annotations

import socket
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# x86_64 syscall numbers worth naming in a hang report.
SYSCALL_NAMES = {
    0: "read",
    1: "write",
    7: "poll",
    23: "select",
    35: "nanosleep",
    43: "accept",
    202: "futex",
    232: "epoll_wait",
    230: "clock_nanosleep",
    270: "pselect6",
    271: "ppoll",
    281: "epoll_pwait",
    288: "accept4",
    441: "epoll_pwait2",
}
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


@dataclass(frozen=True)
class ThreadState:
    tid: int
    name: str
    state: str  # R, S, D, T, t, Z ...
    syscall: str  # name or number; "running" when not in a syscall
    syscall_args: tuple[str, ...]
    wchan: str


@dataclass(frozen=True)
class SocketInfo:
    fd: int
    state: str  # LISTEN, ESTABLISHED, CLOSE_WAIT ...
    local: str
    remote: str


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def thread_states(pid: int) -> list[ThreadState]:
    threads: list[ThreadState] = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*"), key=lambda p: int(p.name)):
        stat = _read(task / "stat")
        state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
        raw = _read(task / "syscall").split()
        if raw and raw[0].lstrip("-").isdigit():
            number = int(raw[0])
            syscall = SYSCALL_NAMES.get(number, str(number)) if number >= 0 else "running"
            args = tuple(raw[1:7])
        else:
            syscall, args = (raw[0] if raw else "?"), ()
        threads.append(
            ThreadState(
                tid=int(task.name),
                name=_read(task / "comm"),
                state=state,
                syscall=syscall,
                syscall_args=args,
                wchan=_read(task / "wchan") or "0",
            )
        )
    return threads


def _decode_addr(text: str) -> str:
    host, port = text.split(":")
    packed = struct.pack("<I", int(host, 16)) if len(host) == 8 else bytes.fromhex(host)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return f"{socket.inet_ntop(family, packed)}:{int(port, 16)}"


def _tcp_table() -> dict[str, tuple[str, str, str]]:
    table: dict[str, tuple[str, str, str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(Path(name)).splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9:
                table[fields[9]] = (
                    TCP_STATES.get(fields[3], fields[3]),
                    _decode_addr(fields[1]),
                    _decode_addr(fields[2]),
                )
    return table


def open_sockets(pid: int) -> list[SocketInfo]:
    """The TCP sockets the process holds (by fd), with their state."""
    table = _tcp_table()
    sockets: list[SocketInfo] = []
    for fd_path in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = fd_path.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = target[len("socket:[") : -1]
            if inode in table:
                state, local, remote = table[inode]
                sockets.append(SocketInfo(int(fd_path.name), state, local, remote))
    return sorted(sockets, key=lambda s: s.fd)


@dataclass(frozen=True)
class FdUsage:
    open: int
    limit: int | None  # the soft RLIMIT_NOFILE; None if unlimited or unreadable

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.open >= self.limit


def fd_usage(pid: int) -> FdUsage | None:
    """How many descriptors the process holds, against its soft limit."""
    try:
        count = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    limit = None
    for line in _read(Path(f"/proc/{pid}/limits")).splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            limit = int(soft) if soft.isdigit() else None
    return FdUsage(count, limit)


def as_jsonable(items: list[Any]) -> list[dict[str, Any]]:
    return [asdict(item) for item in items]
