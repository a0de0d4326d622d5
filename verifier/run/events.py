"""A workload's events on the soak's clock: signals to the server, ``shutdown`` commands,
pauses of the flood, disconnect storms.

The soak loop asks ``due(now)`` between probes and carries out what is due itself, so an
event never races the loop's own pauses of the flood (the confirmation of a failed probe).
A stopping event (SIGTERM, SIGINT, SIGUSR1, ``shutdown``, ``shutdown graceful``) ends the
soak: the server must then exit within ``SHUTDOWN_BOUND_S``, or the trial is a HANG
``stuck-shutdown`` with the threads' stacks. (Measured on 1.6.18: SIGTERM and SIGUSR1 under
the kv-mix flood exit in well under a second; the main loop checks its stop flag at every
event-loop turn, and the clock event makes one turn a second at least.)
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass, field

from verifier.stress.protocol.base import Command
from verifier.stress.protocol.codecs import codec_for
from verifier.stress.workload_file import Event, EventAction

SHUTDOWN_BOUND_S = 10.0  # a server asked to stop has this long to exit
EVERY_LIMIT = 10_000  # a repeating event fires at most this often in one trial


@dataclass
class Due:
    event: Event
    at_s: float


@dataclass
class EventClock:
    events: tuple[Event, ...]
    _next: dict[int, float] = field(default_factory=dict)
    _count: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, event in enumerate(self.events):
            first = event.at_s if event.at_s is not None else event.every_s
            assert first is not None
            self._next[i] = first

    def next_at(self) -> float | None:
        return min(self._next.values(), default=None)

    def due(self, now_s: float) -> list[Due]:
        out: list[Due] = []
        for i, event in enumerate(self.events):
            at = self._next.get(i)
            if at is None or at > now_s:
                continue
            out.append(Due(event, at))
            self._count[i] = self._count.get(i, 0) + 1
            if event.every_s is not None and self._count[i] < EVERY_LIMIT:
                self._next[i] = at + event.every_s
            else:
                del self._next[i]
        return out


def send_signal(pid: int, name: str) -> None:
    os.kill(pid, getattr(signal, name))


def send_shutdown(host: str, port: int, graceful: bool, timeout_s: float = 2.0) -> str:
    """Send ``shutdown`` (or ``shutdown graceful``) on a new connection; what came back
    (often nothing: the server closes the connection as it stops)."""
    line = codec_for("ascii").encode(Command("shutdown", arg="graceful" if graceful else ""))
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(line)
            sock.settimeout(timeout_s)
            try:
                return sock.recv(200).decode(errors="replace").strip()
            except (TimeoutError, OSError):
                return ""
    except OSError as error:
        return f"not sent: {error.strerror or error}"


def describe(due: Due, answer: str = "") -> str:
    what = due.event.signal if due.event.action == EventAction.SIGNAL else str(due.event.action)
    text = f"{what} at {due.at_s:.1f} s"
    return f"{text} ({answer})" if answer else text
