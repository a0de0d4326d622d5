"""Run external commands: logged, bounded in time, killed by process group."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from verifier.errors import EnvironmentMissing

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr interleaved
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def die_with_parent() -> None:
    """In a child (preexec_fn): get SIGKILL when the parent dies, even if it is SIGKILLed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def require_tool(name: str, hint: str) -> str:
    """Absolute path of ``name`` on PATH, or EnvironmentMissing with an install hint."""
    path = shutil.which(name)
    if path is None:
        raise EnvironmentMissing(f"'{name}' not found on PATH ({hint})")
    return path


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace_s: float = 2.0) -> None:
    """Stop ``proc`` and its process group: SIGTERM, then SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    log: IO[str] | None = None,
    input_text: str | None = None,
) -> CommandResult:
    """Run ``argv`` in its own process group; its output is returned and appended to ``log``."""
    if log is not None:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    except FileNotFoundError as exc:
        raise EnvironmentMissing(f"'{argv[0]}' not found: {exc.strerror}") from None
    timed_out = False
    try:
        output, _ = proc.communicate(input=input_text, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
        output, _ = proc.communicate()
    except BaseException:
        kill_group(proc)
        raise
    if log is not None:
        log.write(output)
        if timed_out:
            log.write(f"[timed out after {timeout_s} s]\n")
        log.flush()
    return CommandResult(tuple(argv), proc.returncode, output, timed_out)
