"""The server's side of one client connection, read from the kernel and from memcached.

``/proc/<pid>/net/tcp`` gives each end's queues: ``rx_queue`` is what the kernel holds that
the owning process has not read, ``tx_queue`` what it has not yet delivered. ``stats
conns`` (1.6.18 prints, per fd: ``addr tcp:127.0.0.1:<port>``, ``listen_addr``, ``state``,
``secs_since_last_cmd``) gives memcached's own view of the connection. Measured on Debian's
1.6.18 --tls with 16 pipelined sets in one TLS write: the connection stalls after 15
answers with both queues 0 and ``state conn_read`` (the 16th request already in OpenSSL's
buffer, epoll waiting for socket data that never comes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from verifier.evidence.procfs import TCP_STATES

WAITING_STATES = frozenset({"conn_read", "conn_waiting", "conn_new_cmd"})  # for input


@dataclass(frozen=True)
class TcpRow:
    """One IPv4 TCP socket's row: ports, state and queues (bytes)."""

    local_port: int
    remote_port: int
    state: str
    tx_queue: int
    rx_queue: int
    line: str  # as the kernel printed it (kept as evidence)


def tcp_rows(pid: int) -> list[TcpRow]:
    """The IPv4 TCP table of ``pid``'s network namespace (the harness listens on 127.0.0.1)."""
    try:
        text = Path(f"/proc/{pid}/net/tcp").read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5 or ":" not in fields[4]:
            continue
        tx, rx = fields[4].split(":")
        rows.append(
            TcpRow(
                int(fields[1].rsplit(":", 1)[1], 16),
                int(fields[2].rsplit(":", 1)[1], 16),
                TCP_STATES.get(fields[3], fields[3]),
                int(tx, 16),
                int(rx, 16),
                line.strip(),
            )
        )
    return rows


def find_row(rows: list[TcpRow], local_port: int, remote_port: int) -> TcpRow | None:
    for row in rows:
        if row.local_port == local_port and row.remote_port == remote_port:
            return row
    return None


@dataclass(frozen=True)
class ConnRow:
    """memcached's own row for one connection (``stats conns``)."""

    fd: int
    addr: str
    state: str
    idle_s: int  # secs_since_last_cmd
    lines: tuple[str, ...]

    @property
    def port(self) -> int:
        tail = self.addr.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else 0


def conn_rows(text: str) -> list[ConnRow]:
    """The ``stats conns`` answer, one row per fd (listeners included)."""
    by_fd: dict[int, dict[str, str]] = {}
    lines: dict[int, list[str]] = {}
    for line in text.splitlines():
        parts = line.strip().split(" ", 2)
        if len(parts) != 3 or parts[0] != "STAT" or ":" not in parts[1]:
            continue
        fd, name = parts[1].split(":", 1)
        if not fd.isdigit():
            continue
        by_fd.setdefault(int(fd), {})[name] = parts[2]
        lines.setdefault(int(fd), []).append(line.strip())
    rows = []
    for fd, values in sorted(by_fd.items()):
        idle = values.get("secs_since_last_cmd", "")
        rows.append(
            ConnRow(
                fd,
                values.get("addr", ""),
                values.get("state", ""),
                int(idle) if idle.isdigit() else -1,
                tuple(lines[fd]),
            )
        )
    return rows
