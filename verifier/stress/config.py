"""What the connection-churn flood does: target, size, bounds, command mix, timeouts."""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from verifier.errors import BadInput

if TYPE_CHECKING:
    from verifier.stress.workload_file import Group

COMMANDS = ("get", "set", "stats")  # the commands the flood knows how to send and parse

StartMethod = Literal["fork", "spawn"]


class FloodConfigError(BadInput, ValueError):
    """A bad flood setting; a ``ValueError`` too, so plain callers can catch it as one."""


def require_loopback(host: str) -> str:
    """``host`` if it is a loopback IP literal (127.0.0.0/8, ::1); ValueError otherwise."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise FloodConfigError(f"flood host must be a loopback IP address, got {host!r}") from None
    if not address.is_loopback:
        raise FloodConfigError(f"refusing to flood non-loopback address {host}")
    return host


@dataclass(frozen=True)
class FloodConfig:
    host: str = "127.0.0.1"
    port: int = 11211
    concurrency: int = 400  # total coroutines (one connection each at a time) across processes
    processes: int = 0  # 0 = os.cpu_count(); never more than concurrency
    duration_s: float = 60.0  # flooding time (paused time does not count)
    max_cycles: int = 10_000_000  # connection cycles (attempts) in total across processes
    mix: tuple[tuple[str, float], ...] = (("get", 0.6), ("set", 0.3), ("stats", 0.1))
    ops_per_connection: int = 1  # commands sent (one after the other) per connection
    connect_timeout_s: float = 1.0
    reply_timeout_s: float = 1.0
    linger_rst: bool = True  # SO_LINGER 0: close with RST, no TIME_WAIT on the client
    use_uvloop: bool = True  # if importable; plain asyncio otherwise
    key_space: int = 1024  # keys "vk:0" .. "vk:<key_space-1>"
    value_size: int = 64  # bytes per `set`
    start_method: StartMethod = "fork"  # "spawn" for a parent with threads or odd inherited fds
    seed: int = 0  # request schedule seed (per process: seed + index)
    groups: tuple[Group, ...] = ()  # the workload's client groups (beside the churn)
    report_dir: str = ""  # where each process writes what its groups saw, and the history
    tls_port: int = 0  # the server's TLS listener, for groups with tls = true (0: none)
    tls_ca: str = ""  # the CA file those clients trust (a path: workers build the context)

    def __post_init__(self) -> None:
        require_loopback(self.host)
        problems: list[str] = []
        if not 0 < self.port < 65536:
            problems.append(f"port {self.port} out of range")
        if not 0 <= self.tls_port < 65536 or bool(self.tls_port) != bool(self.tls_ca):
            problems.append("tls_port (in range) and tls_ca go together")
        if self.concurrency < 0 or (self.concurrency == 0 and not self.groups):
            problems.append("concurrency must be >= 1 (or 0 beside client groups)")
        if self.processes < 0:
            problems.append("processes must be >= 0")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            problems.append("duration_s must be a positive finite number")
        if self.max_cycles < 1:
            problems.append("max_cycles must be >= 1")
        if self.ops_per_connection < 1:
            problems.append("ops_per_connection must be >= 1")
        for name in ("connect_timeout_s", "reply_timeout_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                problems.append(f"{name} must be a positive finite number")
        if self.key_space < 1 or self.value_size < 0:
            problems.append("key_space must be >= 1 and value_size >= 0")
        if self.start_method not in ("fork", "spawn"):
            problems.append(f"start_method must be 'fork' or 'spawn', not {self.start_method!r}")
        if not self.mix:
            problems.append("mix is empty")
        for command, weight in self.mix:
            if command not in COMMANDS:
                known = ", ".join(COMMANDS)
                problems.append(f"unknown command {command!r} in mix (known: {known})")
            if not (weight >= 0 and math.isfinite(weight)):
                problems.append(f"weight of {command!r} must be >= 0")
        if self.mix and sum(weight for _, weight in self.mix) <= 0:
            problems.append("mix weights sum to 0")
        if problems:
            raise FloodConfigError("bad flood config: " + "; ".join(problems))

    @property
    def process_count(self) -> int:
        """Worker processes actually started."""
        wanted = self.processes or os.cpu_count() or 1
        return max(1, min(wanted, self.concurrency + sum(g.clients for g in self.groups)))

    def share(self, index: int) -> tuple[int, int]:
        """(coroutines, cycle budget) of worker process ``index``: even splits of the totals."""
        n = self.process_count
        return _split(self.concurrency, n, index), _split(self.max_cycles, n, index)


def _split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)
