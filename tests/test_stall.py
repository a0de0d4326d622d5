"""A stalled connection is proven from the server's own state, or it is no hang.

On Debian's real 1.6.18 --tls, pipelined TLS sets (the known bug tls-pipelined-sets,
fixed in 1.6.39) stall connections: HANG part-hung, proven by the server's socket (every
byte read) and its ``stats conns`` row (waiting for input past the reply timeout). The
same workload over plain connections, or over TLS at pipeline 1, passes. Without the
server's proof (it never read the bytes, or an answer came late) a timeout is no stall:
judged here on real loopback sockets.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.errors import ExitStatus
from verifier.evidence.stalled import TcpRow, conn_rows, tcp_rows
from verifier.paths import CacheLayout
from verifier.run.stall_proof import judge
from verifier.stress.stalls import Stall

from conftest import ROOT, run_cli

WORKLOAD = ROOT / "recipes" / "workloads" / "tls-pipelined-sets.toml"


def _verify(cache: CacheLayout, tmp_path: Path, *args: str) -> tuple[int, str, dict]:
    done = run_cli("verify", "--source", "debian", "--tls", "--scenario", "tls-pipelined-sets",
                   "--trials", "1", "--run-dir", str(tmp_path / "run"), *args,
                   cache=cache, timeout=600)  # fmt: skip
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    return done.returncode, done.stdout + done.stderr, report


@pytest.mark.slow  # a TLS build of its own when not cached: about 1-2 min on 2 cores
def test_pipelined_tls_sets_stall_a_connection_proven_by_the_server(
    tmp_path: Path, cache_layout: CacheLayout
) -> None:
    code, out, report = _verify(cache_layout, tmp_path, "--soak", "8", "--expect", "hang:part-hung")
    assert code == ExitStatus.SUCCESS, out
    assert report["verdict"]["hang_class"] == "part-hung", out
    assert report["verdict"]["proof"] == "socket", out
    diagnosis = report["trials"][0]["diagnosis"]
    assert "the server read every byte" in diagnosis["summary"]
    assert diagnosis["liveness"] == "server answering, one part stuck"  # not "listener dead"
    proven = [f for f in diagnosis["details"]["findings"] if f["proven"]]
    assert proven, diagnosis
    for name in diagnosis["details"]["evidence"]:
        text = (tmp_path / "run" / "trial-1" / name).read_text()
        assert "stats conns" in text and "/proc/<server pid>/net/tcp" in text
    first = proven[0]
    assert any(line.endswith("state conn_read") for line in first["stats_conns"])
    assert first["server_row"].split()[4] == "00000000:00000000"  # tx:rx queues empty


@pytest.mark.slow
@pytest.mark.parametrize(
    ("old", "new"), [("tls = true", "tls = false"), ("pipeline = 16", "pipeline = 1")]
)
def test_plain_or_unpipelined_sets_do_not_stall(
    tmp_path: Path, cache_layout: CacheLayout, old: str, new: str
) -> None:
    workload = tmp_path / "w.toml"
    workload.write_text(WORKLOAD.read_text().replace(old, new))
    code, out, report = _verify(cache_layout, tmp_path, "--soak", "5", "--workload", str(workload))
    assert code == ExitStatus.SUCCESS, out
    assert report["verdict"]["kind"] == "PASS", out
    assert not list((tmp_path / "run").rglob("stalls-*.json")), out


# -- the judgement, on real loopback sockets -----------------------------------------------
@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair: (the "server"'s accepted end, the client's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        try:
            yield server, client
        finally:
            client.close()
            server.close()


def _stall(client: socket.socket, sent: int, late: int = 0) -> Stall:
    mine, theirs = client.getsockname()[1], client.getpeername()[1]
    return Stall("g", "p0.g.0", mine, theirs, False, 16, 3, sent, 0, 5.0, time.time(), late)


def _conns(port: int, state: str = "conn_read", idle: int = 9) -> str:
    return (
        f"STAT 20:addr tcp:127.0.0.1:{port}\r\nSTAT 20:state {state}\r\n"
        f"STAT 20:secs_since_last_cmd {idle}\r\nSTAT 21:addr tcp:127.0.0.1:1\r\n"
        "STAT 21:state conn_parse_cmd\r\nSTAT 21:secs_since_last_cmd 0\r\nEND\r\n"
    )


def _rows_until_unread(port: int) -> list[TcpRow]:
    """The tables once the kernel holds the sent bytes unread (loopback: within ms)."""
    rows: list[TcpRow] = []
    for _ in range(100):
        rows = tcp_rows(os.getpid())
        if any(r.rx_queue for r in rows if r.remote_port == port):
            break
        time.sleep(0.01)
    return rows


Pair = tuple[socket.socket, socket.socket]


def test_bytes_the_server_never_read_are_no_stall(pair: Pair) -> None:
    _server, client = pair
    client.sendall(b"x" * 3000)
    port = client.getsockname()[1]
    rows = _rows_until_unread(port)
    found = judge(_stall(client, 3000), rows, conn_rows(_conns(port)), 5.0)
    assert not found.proven
    assert "had not read 3000 bytes" in found.why_not


def test_read_and_unanswered_is_a_stall_unless_an_answer_came_late(pair: Pair) -> None:
    server, client = pair
    client.sendall(b"x" * 3000)
    got = b""
    while len(got) < 3000:
        got += server.recv(65536)
    port = client.getsockname()[1]
    rows = tcp_rows(os.getpid())
    found = judge(_stall(client, 3000), rows, conn_rows(_conns(port)), 5.0)
    assert found.proven, found.why_not
    assert found.others == 1
    assert "read every byte of its 16 requests" in found.sentence()
    late = judge(_stall(client, 3000, late=40), rows, conn_rows(_conns(port)), 5.0)
    assert "came late" in late.why_not
    busy = judge(_stall(client, 3000), rows, conn_rows(_conns(port, "conn_mwrite")), 5.0)
    assert "conn_mwrite" in busy.why_not
    fresh = judge(_stall(client, 3000), rows, conn_rows(_conns(port, idle=2)), 5.0)
    assert "idle only 2 s" in fresh.why_not
