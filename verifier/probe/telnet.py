"""Telnet-style sessions with pexpect: the ``telnet`` client when installed, a socket otherwise.

A session sends text commands and waits for a terminator (``END`` for ``stats``), exactly
as a person at a terminal would check a memcached by hand.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import socket
import threading
import time
from dataclasses import dataclass

import pexpect
import pexpect.fdpexpect

from verifier.errors import EnvironmentMissing, HarnessError

TELNET_ENV = "VERIFIER_PROBE_CLIENT"  # "telnet" or "socket" forces one kind


class ProbeTimeout(HarnessError):
    """No connection, or no complete reply, within the timeout. Probes expect it; anywhere
    else (the held connection before the flood) it is a harness error."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage  # "connect" or "reply"


def client_kind(preferred: str | None = None) -> str:
    """``telnet`` or ``socket``. Auto takes telnet when installed; asked for by name (an
    option or $VERIFIER_PROBE_CLIENT) telnet must be there: no quiet fallback."""
    kind = preferred or os.environ.get(TELNET_ENV) or "auto"
    if kind == "auto":
        return "telnet" if shutil.which("telnet") else "socket"
    if kind not in ("telnet", "socket"):
        raise EnvironmentMissing(f"unknown probe client {kind!r} ({TELNET_ENV}: telnet|socket)")
    if kind == "telnet" and not shutil.which("telnet"):
        raise EnvironmentMissing("telnet probe client not installed (apt-get install telnet)")
    return kind


@dataclass
class TelnetSession:
    """One open connection; ``kind`` tells which client carries it."""

    kind: str
    child: pexpect.spawn | pexpect.fdpexpect.fdspawn
    sock: socket.socket | None = None

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        timeout_s: float,
        kind: str | None = None,
        stop: threading.Event | None = None,
    ) -> TelnetSession:
        kind = client_kind(kind)
        if kind == "telnet":
            child = pexpect.spawn(
                "telnet",
                [host, str(port)],
                timeout=timeout_s,
                encoding="utf-8",
                codec_errors="replace",
                env={**os.environ, "TERM": "dumb"},
            )
            try:
                _expect(child, "Escape character is", timeout_s, stop)
            except pexpect.TIMEOUT:
                child.close(force=True)
                raise ProbeTimeout(
                    "connect", f"telnet: no connection within {timeout_s:.1f}s"
                ) from None
            except pexpect.EOF:
                said = " ".join(str(child.before).split())[-120:]
                child.close(force=True)
                raise ProbeTimeout("connect", f"telnet: {said or 'exited'}") from None
            return cls(kind, child)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            _connect(sock, host, port, timeout_s, stop)
        except OSError as exc:
            sock.close()
            raise ProbeTimeout("connect", f"socket: connect failed: {exc}") from None
        sock.setblocking(True)
        child = pexpect.fdpexpect.fdspawn(
            sock.fileno(), timeout=timeout_s, encoding="utf-8", codec_errors="replace"
        )
        return cls(kind, child, sock)

    def command(
        self,
        line: str,
        until: str = "END",
        timeout_s: float = 1.0,
        stop: threading.Event | None = None,
    ) -> str:
        """Send ``line`` and return the reply up to and including ``until``. A connection
        closed or reset by the server is a failed reply, like silence. ``stop`` ends the
        wait early (a hang already proven otherwise), as a failed reply."""
        try:
            self.child.send(line + "\r\n")
            _expect(self.child, f"{until}\r\n", timeout_s, stop)
        except pexpect.TIMEOUT:
            raise ProbeTimeout("reply", f"no {until} within {timeout_s:.1f}s") from None
        except pexpect.EOF:
            raise ProbeTimeout("reply", "connection closed before the reply") from None
        except OSError as exc:  # ECONNRESET, EPIPE on a socket
            raise ProbeTimeout("reply", f"connection failed: {exc.strerror or exc}") from None
        return str(self.child.before) + until

    def stats(self, timeout_s: float = 1.0, stop: threading.Event | None = None) -> dict[str, str]:
        return parse_stats(self.command("stats", "END", timeout_s, stop))

    def local_port(self) -> int | None:
        """Our end's port, so evidence can tell the held connection from clients."""
        if self.sock is not None:
            return int(self.sock.getsockname()[1])
        from verifier.evidence.procfs import open_sockets

        mine = [s for s in open_sockets(self.child.pid) if s.state == "ESTABLISHED"]
        return int(mine[0].local.rsplit(":", 1)[1]) if mine else None

    def close(self) -> None:
        try:
            if self.kind == "telnet":
                self.child.close(force=True)
            elif self.sock is not None:
                self.sock.close()
        except (OSError, pexpect.ExceptionPexpect):
            pass


_SLICE_S = 0.05  # how soon a wait notices ``stop``


def _expect(
    child: pexpect.spawn | pexpect.fdpexpect.fdspawn,
    pattern: str,
    timeout_s: float,
    stop: threading.Event | None,
) -> None:
    """``child.expect(pattern)`` within ``timeout_s``, giving up early once ``stop`` is set
    (raises pexpect.TIMEOUT either way)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            child.expect(pattern, timeout=max(0.0, min(left, _SLICE_S)))
            return
        except pexpect.TIMEOUT:
            if left <= _SLICE_S or (stop is not None and stop.is_set()):
                raise


def _connect(
    sock: socket.socket, host: str, port: int, timeout_s: float, stop: threading.Event | None
) -> None:
    """A blocking connect within ``timeout_s``, given up early once ``stop`` is set."""
    deadline = time.monotonic() + timeout_s
    sock.setblocking(False)
    code = sock.connect_ex((host, port))
    while code in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
        left = deadline - time.monotonic()
        if left <= 0 or (stop is not None and stop.is_set()):
            raise TimeoutError(errno.ETIMEDOUT, "timed out")
        select.select([], [sock], [], min(left, _SLICE_S))
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0 and not _connected(sock):
            code = errno.EINPROGRESS
    if code:
        raise OSError(code, os.strerror(code))


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def parse_stats(text: str) -> dict[str, str]:
    stats: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            stats[parts[1]] = parts[2]
    return stats


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_s: float
    stage: str  # "ok", "connect" or "reply"
    detail: str = ""
    stats: dict[str, str] | None = None


def probe_new_connection(
    host: str,
    port: int,
    timeout_s: float,
    kind: str | None = None,
    stop: threading.Event | None = None,
) -> ProbeResult:
    """Open a NEW connection, send ``stats``, expect ``END``: is the listener alive?
    ``stop``: give up waiting for the reply as soon as it is set."""
    started = time.monotonic()
    deadline = started + timeout_s
    session: TelnetSession | None = None
    try:
        session = TelnetSession.open(host, port, timeout_s, kind, stop)
        stats = session.stats(max(0.05, deadline - time.monotonic()), stop)
        return ProbeResult(True, time.monotonic() - started, "ok", stats=stats)
    except ProbeTimeout as exc:
        return ProbeResult(False, time.monotonic() - started, exc.stage, str(exc))
    finally:
        if session is not None:
            session.close()
