"""Is a stalled connection the server's fault? Proven only from the server's own state.

A client whose replies timed out may have met a slow machine, a starved client loop or a
busy server; none of those is a hang. The flood keeps such a connection open (see
``stress/stalls.py``) and the harness, before the flood stops, reads both ends of it:

- the server's socket: ``rx_queue`` 0, ``tx_queue`` 0 (it read every byte the client sent
  and has nothing unsent), and the client's: both queues 0 too, no bytes left in its own
  write buffer, none received after the timeout (read from a flush newer than the tables);
- memcached's ``stats conns`` row for it: waiting for input (``conn_read``...) for at least
  the reply timeout, answered over the plain port meanwhile, like the trial's probes.

Then it is HANG part-hung: the server holds requests it read and will not answer. Anything
less (the server never read the bytes, a late answer came) is a note, never a hang.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.evidence.stalled import WAITING_STATES, ConnRow, TcpRow, conn_rows, find_row
from verifier.stress.stalls import Stall, read_stalls

CLOCK_SLACK_S = 1  # memcached's current_time ticks once a second: idle reads up to 1 s low
FLUSH_WAIT_S = 2.5  # the flood rewrites its stall file every second (HISTORY_FLUSH_S)


@dataclass(frozen=True)
class StallFinding:
    """What was read of one kept connection, and whether it proves a stall."""

    stall: Stall
    server_row: TcpRow | None
    client_row: TcpRow | None
    conn: ConnRow | None
    others: int  # other connections the server served in the last second
    why_not: str  # "" when proven

    @property
    def proven(self) -> bool:
        return not self.why_not

    def sentence(self) -> str:
        s, idle = self.stall, self.conn.idle_s if self.conn else 0
        kind = "TLS " if s.tls else ""
        return (
            f"one {kind}connection stalled ({s.group}, port {s.local_port}): the server read "
            f"every byte of its {s.requests} requests ({s.bytes_sent:,} bytes), answered "
            f"{s.answered} and then none for {idle} s while it served others ({self.others} "
            f"connection(s) in the last second, the harness's among them); "
            f"evidence/stall-{s.local_port}.txt"
        )

    def evidence_text(self) -> str:
        lines = [f"stall as the client recorded it: {self.stall}"]
        lines.append("/proc/<server pid>/net/tcp, the server's end:")
        lines.append(f"  {self.server_row.line if self.server_row else 'absent'}")
        lines.append("/proc/<server pid>/net/tcp, the client's end:")
        lines.append(f"  {self.client_row.line if self.client_row else 'absent'}")
        lines.append("stats conns (over the plain port), this connection:")
        lines += [f"  {line}" for line in (self.conn.lines if self.conn else ("absent",))]
        lines.append(f"verdict: {'proven stall' if self.proven else 'not proven: ' + self.why_not}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "stall": self.stall.to_json(),
            "server_row": self.server_row.line if self.server_row else None,
            "client_row": self.client_row.line if self.client_row else None,
            "stats_conns": list(self.conn.lines) if self.conn else None,
            "proven": self.proven,
            "why_not": self.why_not,
        }


def judge(
    stall: Stall, rows: list[TcpRow], conns: list[ConnRow], min_idle_s: float
) -> StallFinding:
    """One stall against the tables read while it was still open."""
    server = find_row(rows, stall.server_port, stall.local_port)
    client = find_row(rows, stall.local_port, stall.server_port)
    conn = next((c for c in conns if c.port == stall.local_port and "127.0.0.1" in c.addr), None)
    clients = [c for c in conns if c.state != "conn_listening" and c is not conn]
    others = sum(1 for c in clients if 0 <= c.idle_s <= CLOCK_SLACK_S)  # served just now
    why = ""
    if server is None or client is None or conn is None:
        why = "the connection is no longer in the server's tables"
    elif server.state != "ESTABLISHED":
        why = f"the server's end is {server.state}"
    elif server.rx_queue or client.tx_queue or stall.unsent:
        unread = server.rx_queue + client.tx_queue + stall.unsent
        why = f"the server had not read {unread} bytes (busy or slow, not stalled)"
    elif server.tx_queue or client.rx_queue or stall.late_bytes:
        why = "an answer was on its way or came late (the client was slow)"
    elif conn.state not in WAITING_STATES:
        why = f"the server's connection is in {conn.state}, not waiting for input"
    elif conn.idle_s < min_idle_s - CLOCK_SLACK_S:
        why = f"idle only {conn.idle_s} s"
    elif stall.answered >= stall.requests:
        why = "every request was answered"
    return StallFinding(stall, server, client, conn, others, why)


def look(
    report_dir: Path, stats_conns: str, rows: list[TcpRow], min_idle_s: float
) -> list[StallFinding]:
    """Every recorded stall judged against ``stats_conns`` and ``rows`` (read just before):
    late bytes come from a stall file written after the tables were read."""
    read_at = time.time()
    deadline = time.monotonic() + FLUSH_WAIT_S
    paths = list(report_dir.glob("stalls-*.json"))
    while time.monotonic() < deadline and not all(_newer(p, read_at) for p in paths):
        time.sleep(0.1)
    fresh = all(_newer(p, read_at) for p in paths)
    conns = conn_rows(stats_conns)
    findings = []
    for stall in read_stalls(report_dir):
        found = judge(stall, rows, conns, min_idle_s)
        if found.proven and not fresh:
            found = StallFinding(
                stall, found.server_row, found.client_row, found.conn, found.others,
                "the flood did not report the connection again after the tables were read",
            )  # fmt: skip
        findings.append(found)
    return findings


def _newer(path: Path, than: float) -> bool:
    try:
        return path.stat().st_mtime > than
    except OSError:
        return False
