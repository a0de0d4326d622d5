"""The pexpect liveness probe, through the telnet client and over a plain socket."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from verifier.probe.telnet import TelnetSession, probe_new_connection
from verifier.run.server import HOST, MemcachedServer, ServerConfig, free_port

KINDS = [
    "socket",
    pytest.param(
        "telnet",
        marks=pytest.mark.skipif(
            not shutil.which("telnet"),
            reason="telnet client not installed (./bootstrap installs it)",
        ),
    ),
]


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
