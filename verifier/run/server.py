"""Run one memcached on 127.0.0.1: free port, fd limit = -c, verbose log, always stopped.

The server gets its own process group (stopped with killpg) and a parent-death signal,
so it dies with the verifier even when the verifier is SIGKILLed. As root, memcached
needs ``-u nobody``; its setuid() clears the parent-death signal, so the preload library
re-arms it (VERIFIER_PDEATHSIG) right after the switch.

With ``tls`` (a build with ``--enable-tls``), the server listens twice on 127.0.0.1: the
plain port (``-l notls:``) for the harness's own probes and stats readers, and a TLS port
for the workload's TLS client groups.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from verifier.build.help import help_text
from verifier.errors import HarnessError
from verifier.harness_options import refuse_harness_options
from verifier.run.tls_files import TlsFiles
from verifier.util import pidlog
from verifier.util.proc import die_with_parent, kill_group

HOST = "127.0.0.1"
READY_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServerConfig:
    binary: Path
    threads: int
    maxconns: int
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # e.g. LD_PRELOAD for the amplifier
    fd_limit: int | None = None  # RLIMIT_NOFILE of the server; default: maxconns
    tls: TlsFiles | None = None  # a TLS listener too, with this throwaway certificate

    def __post_init__(self) -> None:
        refuse_harness_options(self.extra_args, "server options")

    def argv(self, port: int, tls_port: int = 0) -> list[str]:
        if self.tls is None:
            args = [str(self.binary), "-l", HOST, "-p", str(port), "-U", "0"]
        else:  # the probes keep a plain listener; only tls_port speaks TLS
            listen = f"notls:{HOST}:{port},{HOST}:{tls_port}"
            args = [str(self.binary), "-l", listen, "-p", str(port), "-U", "0", "-Z"]
            args += ["-o", self.tls.server_options()]
        args += ["-t", str(self.threads), "-c", str(self.maxconns), "-v"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        return args + list(self.extra_args)


class MemcachedServer:
    """Context manager around one server process."""

    def __init__(self, config: ServerConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.port = 0
        self.tls_port = 0  # with config.tls: where the TLS clients connect
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> MemcachedServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _preexec(self) -> None:
        limit = self.config.fd_limit or self.config.maxconns
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        die_with_parent()

    def start(self, attempts: int = 3) -> None:
        env = dict(os.environ)
        env.update(self.config.env)
        env["VERIFIER_PDEATHSIG"] = str(int(signal.SIGKILL))
        env["VERIFIER_PARENT_PID"] = str(os.getpid())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            self.port = free_port()
            self.tls_port = free_port() if self.config.tls is not None else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.config.argv(self.port, self.tls_port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=self._preexec,
                )
            self.started_at = time.monotonic()
            pidlog.record(self.proc.pid, "memcached")
            if self._wait_ready():
                return
            self.stop()  # port taken by someone else in between, or the server died: retry
        raise HarnessError(f"memcached did not start; see {self.log_path}:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        """Ready when a ``stats`` on our port answers with OUR pid: another memcached that
        took the port in between (a reused port) is never taken for ours."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            pid = _answering_pid(self.port)
            if pid == self.proc.pid:
                return True
            if pid is not None:
                return False  # someone else answers on this port: retry on another
            time.sleep(0.05)
        return False

    def stop(self, grace_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; 0 kills at once (a hung listener never
        runs memcached's SIGTERM path: measured, the full 2 s wasted on every hang)."""
        if self.proc is not None:
            kill_group(self.proc, grace_s)

    # -- state ----------------------------------------------------------------------------
    def endpoints(self) -> dict[str, Any]:
        """Where a flood aims (``FloodConfig`` fields): the plain port, and the TLS port and
        the CA its clients trust when the server speaks TLS."""
        tls = self.config.tls
        return {
            "port": self.port,
            "tls_port": self.tls_port,
            "tls_ca": str(tls.ca) if tls is not None else "",
        }

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise HarnessError("server not started")
        return self.proc.pid

    def exited(self) -> int | None:
        """None while running; else the return code (negative: killed by that signal)."""
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _answering_pid(port: int, timeout_s: float = 0.5) -> int | None:
    """The pid a memcached on ``port`` reports in ``stats`` (None: no complete answer)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    for line in reply.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[:2] == ["STAT", "pid"] and parts[2].isdigit():
            return int(parts[2])
    return None


def server_options_for(binary: Path, options: Sequence[tuple[tuple[str, ...], str]]) -> list[str]:
    """Recipe server options whose condition (a word in ``memcached -h``) holds."""
    if not options:
        return []
    text = help_text(binary)
    args: list[str] = []
    for option_args, mentions in options:
        if not mentions or mentions in text:
            args += option_args
    return args
