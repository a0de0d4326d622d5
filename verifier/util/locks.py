"""Inter-process locks on files, so that concurrent verifiers share one cache safely.

A lock is an ``flock`` on a file that stays in place. Waiting is bounded: a holder that
hangs (a clone with no route, a stuck build) must not block the next run forever, so a
waiter polls and, past its timeout, raises one line naming the holder, whose pid, command
and start time the holder wrote into the lock file. ``VERIFIER_LOCK_TIMEOUT`` (seconds)
overrides every default. A lock file may be unlinked only by a process that holds it
exclusively (``HeldLock.unlink``); a waiter that then wins the lock on the old inode sees
that the path no longer names it and tries again, so two processes never both "hold" it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import HarnessError
from verifier.util.env import seconds_from_env

LOCK_TIMEOUT_ENV = "VERIFIER_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 600.0
_POLL_FIRST_S = 0.02
_POLL_MAX_S = 0.5


class LockTimeout(HarnessError):
    """Another process held a lock for longer than this one would wait."""


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str
    since: float  # epoch seconds when it took the lock

    def describe(self) -> str:
        return f"pid {self.pid}: {self.command}"


@dataclass
class HeldLock:
    path: Path
    fd: int
    exclusive: bool

    def unlink(self) -> None:
        """Remove the lock file while holding it (exclusive holders only)."""
        if not self.exclusive:
            raise ValueError("only an exclusive holder may unlink a lock file")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def lock_timeout_s(default: float = DEFAULT_LOCK_TIMEOUT_S) -> float:
    """``$VERIFIER_LOCK_TIMEOUT`` if set, else the caller's default for this use."""
    return seconds_from_env(LOCK_TIMEOUT_ENV, default, allow_zero=True)


def this_process() -> str:
    """How this process was started, for the lock file ("verifier build --ref ...")."""
    try:
        words = Path("/proc/self/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        words = list(sys.argv)
    words = [w for w in words if w]
    if len(words) >= 3 and words[1:3] == ["-m", "verifier"]:
        words = ["verifier", *words[3:]]  # python -m verifier ... reads as the installed script
    elif len(words) > 1 and Path(words[0]).name.startswith("python") and words[1][:1] != "-":
        words = words[1:]  # python SCRIPT ...: the script names the process
    if words:
        words[0] = Path(words[0]).name
    text = " ".join(" ".join(words).split())  # one line, whatever the arguments held
    return text if len(text) <= 120 else text[:117] + "..."


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in ``path`` (None if nothing readable is recorded)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
        return Holder(int(data["pid"]), str(data["command"]), float(data["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _record_holder(fd: int) -> None:
    record = {"pid": os.getpid(), "command": this_process(), "since": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _try_take(path: Path, shared: bool) -> int | None:
    """An fd holding the lock on the file ``path`` names now, or None if it is busy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _same_file(fd, path):
            return fd
        os.close(fd)  # unlinked by its last holder while we opened it: take the new file


def _timeout_error(path: Path, waited_s: float) -> LockTimeout:
    holder = read_holder(path)
    if holder is None:
        return LockTimeout(
            f"another process has held {path} for over {waited_s:.0f} s (no holder recorded); "
            f"gave up waiting ({LOCK_TIMEOUT_ENV} sets the wait)"
        )
    held_s = max(time.time() - holder.since, waited_s)
    return LockTimeout(
        f"another verifier ({holder.describe()}) has held {path} for {held_s:.0f} s; "
        f"gave up after waiting {waited_s:.0f} s ({LOCK_TIMEOUT_ENV} sets the wait)"
    )


@contextlib.contextmanager
def file_lock(
    path: Path, *, shared: bool = False, timeout_s: float | None = None
) -> Iterator[HeldLock]:
    """Hold an flock on ``path`` (created if missing) for the block: exclusive by default,
    shared with ``shared=True``. Wait at most ``timeout_s`` (this use's default, 600 s if
    None; ``$VERIFIER_LOCK_TIMEOUT`` overrides both), then raise ``LockTimeout`` naming the
    holder. An exclusive holder records itself in the file."""
    limit = lock_timeout_s() if timeout_s is None else lock_timeout_s(timeout_s)
    started = time.monotonic()
    pause = _POLL_FIRST_S
    while (fd := _try_take(path, shared)) is None:
        waited = time.monotonic() - started
        if waited >= limit:
            raise _timeout_error(path, waited)
        time.sleep(min(pause, max(limit - waited, 0.0)))
        pause = min(pause * 2, _POLL_MAX_S)
    held = HeldLock(path, fd, exclusive=not shared)
    try:
        if not shared:
            _record_holder(fd)
        yield held
    finally:
        if not shared:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def held_exclusively(path: Path) -> bool:
    """Whether some process holds ``path`` exclusively right now (a shared try fails)."""
    fd = _try_take(path, shared=True)
    if fd is None:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return False


@contextlib.contextmanager
def try_file_lock(path: Path) -> Iterator[HeldLock | None]:
    """Take ``path`` exclusively without waiting; yield None when someone holds it."""
    fd = _try_take(path, shared=False)
    if fd is None:
        yield None
        return
    held = HeldLock(path, fd, exclusive=True)
    try:
        _record_holder(fd)
        yield held
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
