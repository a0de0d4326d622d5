"""Liveness per worker and per operation: one connection per worker thread, each asked to
``set`` (an allocation), ``get`` it back, and ``stats``.

memcached hands new connections to its workers in turn, so ``threads`` connections opened
one after the other while nothing else connects (the flood is drained) land one on each
worker. A worker that never answers, or an operation that never answers on every worker
(a ``set`` blocked in the slab allocator) while the rest do, shows the same way in two
rounds: that part is hung while ``stats`` on a new connection may still answer.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass

PROBE_KEY = b"verifier:probe"
_OPS: tuple[tuple[str, bytes, bytes], ...] = (
    ("set", b"set " + PROBE_KEY + b" 0 0 1\r\nx\r\n", b"\r\n"),
    ("get", b"get " + PROBE_KEY + b"\r\n", b"END\r\n"),
    ("stats", b"stats\r\n", b"END\r\n"),
)


@dataclass(frozen=True)
class PartResult:
    connection: int  # the n-th connection of the round: worker (first + n) mod threads
    failed_op: str  # "" when every operation answered; "connect" when it never connected


def _ask(sock: socket.socket, request: bytes, ending: bytes, deadline: float) -> bool:
    sock.sendall(request)
    got = b""
    while not got.endswith(ending) or (ending == b"\r\n" and not got):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return False
        got += chunk
        if got.startswith((b"ERROR", b"SERVER_ERROR", b"CLIENT_ERROR")):
            return False
    return True


def probe_parts(host: str, port: int, connections: int, timeout_s: float) -> list[PartResult]:
    """One round: ``connections`` connections opened first (so each goes to its own
    worker), then set/get/stats on each; the first operation that failed on each."""
    socks: list[socket.socket | None] = []
    try:
        for _ in range(connections):
            try:
                socks.append(socket.create_connection((host, port), timeout=timeout_s))
            except OSError:
                socks.append(None)
        results = []
        for n, sock in enumerate(socks):
            if sock is None:
                results.append(PartResult(n, "connect"))
                continue
            failed = ""
            for name, request, ending in _OPS:
                try:
                    if not _ask(sock, request, ending, time.monotonic() + timeout_s):
                        failed = name
                        break
                except OSError:
                    failed = name
                    break
            results.append(PartResult(n, failed))
        return results
    finally:
        for sock in socks:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


def part_hung(rounds: list[list[PartResult]]) -> str:
    """What is hung when every round agrees ("" when nothing is, or rounds disagree): the
    same number of connections failing, fewer than all, in every round; or one operation
    failing on every connection in every round while an earlier one answered."""
    counts = [sum(1 for r in results if r.failed_op) for results in rounds]
    if not rounds or counts[0] == 0 or len(set(counts)) != 1:
        return ""
    total = len(rounds[0])
    ops = {r.failed_op for results in rounds for r in results if r.failed_op}
    if counts[0] < total:
        what = "/".join(sorted(ops))
        return (
            f"{counts[0]} of {total} worker threads never answered ({what}) in "
            f"{len(rounds)} rounds, while the others did"
        )
    if len(ops) == 1 and next(iter(ops)) not in ("connect", "set"):
        return (
            f"'{next(iter(ops))}' never answered on any worker, while the operations before it did"
        )
    if ops == {"set"}:
        return "'set' (an allocation) never answered on any worker"
    return ""
