"""Run external commands: logged, bounded in time, killed by process group.

A command can run as another (unprivileged) user: ``run(..., user=RunAs(...))`` or every
``run`` inside ``with run_as(...)`` (how the builder makes ``patch`` and ``git apply``,
called deep in ``verifier.patch``, run as its build user). Such a command gets that user's
HOME, no supplementary groups, and its process group is killed when it ends, so nothing it
left running keeps working on the files afterwards.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from verifier.errors import EnvironmentMissing

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RunAs:
    """Credentials and home of the user a command runs as."""

    name: str
    uid: int
    gid: int
    home: Path

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with this user's identity and home (the caller's XDG dirs dropped)."""
        env = {k: v for k, v in base.items() if not k.startswith("XDG_")}
        env.update(HOME=str(self.home), USER=self.name, LOGNAME=self.name)
        return env


_RUN_AS: contextvars.ContextVar[RunAs | None] = contextvars.ContextVar("run_as", default=None)


@contextlib.contextmanager
def run_as(user: RunAs | None) -> Iterator[None]:
    """Every ``run`` in the block (without its own ``user``) runs as ``user`` (None: as is)."""
    token = _RUN_AS.set(user)
    try:
        yield
    finally:
        _RUN_AS.reset(token)


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
    """Stop ``proc`` and its process group: SIGTERM, then SIGKILL after ``grace_s`` (at
    once when ``grace_s`` is 0)."""
    if proc.poll() is not None:
        return
    steps = ((signal.SIGTERM, grace_s),) if grace_s > 0 else ()
    for sig, wait_s in (*steps, (signal.SIGKILL, 5.0)):
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
    user: RunAs | None = None,
) -> CommandResult:
    """Run ``argv`` in its own process group; its output is returned and appended to ``log``.

    ``user`` (or the enclosing ``run_as``) runs it as that user; then whatever is left in
    its process group when it ends is killed."""
    user = user or _RUN_AS.get()
    if log is not None:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
    if user is not None:
        env = user.environment(os.environ if env is None else env)
    credentials = (
        {"user": user.uid, "group": user.gid, "extra_groups": [], "umask": 0o022}
        if user is not None
        else {}
    )
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
            **credentials,  # type: ignore[arg-type]
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
    finally:
        if user is not None:  # stragglers (a daemon a build step left) stop with the step
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    if log is not None:
        log.write(output)
        if timed_out:
            log.write(f"[timed out after {timeout_s} s]\n")
        log.flush()
    return CommandResult(tuple(argv), proc.returncode, output, timed_out)
