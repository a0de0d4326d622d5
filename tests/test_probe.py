"""The pexpect liveness probe, through the telnet client and over a plain socket."""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

import pytest

from verifier.errors import EnvironmentMissing
from verifier.probe.telnet import TelnetSession, client_kind, probe_new_connection
from verifier.run.server import HOST, MemcachedServer, ServerConfig, free_port

KINDS = ["socket", "telnet"]  # ./bootstrap installs telnet: a missing one fails, never skips


@pytest.mark.parametrize("kind", KINDS)
def test_probe_alive_dead_and_silent(kind: str, pristine, tmp_path: Path) -> None:
    config = ServerConfig(binary=pristine.binary, threads=2, maxconns=64)
    with MemcachedServer(config, tmp_path / "server.log") as server:
        alive = probe_new_connection(HOST, server.port, 2.0, kind)
        assert alive.ok and alive.stats and alive.stats["version"].startswith("1.6")
        held = TelnetSession.open(HOST, server.port, 2.0, kind)
        try:
            assert int(held.stats()["curr_connections"]) >= 1
            assert held.local_port() is not None
        finally:
            held.close()
    refused = probe_new_connection(HOST, free_port(), 1.0, kind)
    assert not refused.ok and refused.stage == "connect"
    # a listener that accepts but never answers: the probe must time out at the reply
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(8)
        mute = probe_new_connection(HOST, silent.getsockname()[1], 0.5, kind)
    assert not mute.ok and mute.stage == "reply"


def test_telnet_asked_for_is_really_telnet(pristine, tmp_path: Path, monkeypatch) -> None:
    """$VERIFIER_PROBE_CLIENT=telnet runs the telnet program (not a socket that says so), and
    without telnet on PATH it is an error, never a quiet fallback to the socket."""
    monkeypatch.setenv("VERIFIER_PROBE_CLIENT", "telnet")
    config = ServerConfig(binary=pristine.binary, threads=2, maxconns=64)
    with MemcachedServer(config, tmp_path / "server.log") as server:
        session = TelnetSession.open(HOST, server.port, 2.0)
        try:
            assert session.kind == "telnet" and session.sock is None
            comm = Path(f"/proc/{session.child.pid}/comm").read_text().strip()
            assert comm == "telnet"
            assert "STAT pid" in session.command("stats")
        finally:
            session.close()
    monkeypatch.setenv("PATH", str(tmp_path))  # no telnet here
    with pytest.raises(EnvironmentMissing):
        client_kind()
    monkeypatch.setenv("VERIFIER_PROBE_CLIENT", "auto")
    assert client_kind() == "socket"


def test_a_reset_connection_is_a_failed_probe_not_an_error() -> None:
    """A server that accepts and resets (RST) fails the probe at the reply stage."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)

        def reset_each() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.recv(64)
                conn.close()  # SO_LINGER 0: RST

        thread = threading.Thread(target=reset_each, daemon=True)
        thread.start()
        for kind in KINDS:
            probe = probe_new_connection(HOST, listener.getsockname()[1], 2.0, kind)
            assert not probe.ok and probe.stage == "reply", probe
        thread.join(5)
