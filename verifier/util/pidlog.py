"""A log of every long-lived process the verifier starts (servers, flood workers, gdb).

Off unless ``$VERIFIER_PID_LOG`` names a file. Each line is ``pid starttime role``, with
the kernel's start time (field 22 of ``/proc/PID/stat``) so that a reused pid is never
mistaken for ours. The test suite sets it and fails any test that leaves one of these
running, wherever it ended up (an orphan reparented to init included).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PID_LOG_ENV = "VERIFIER_PID_LOG"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def record(pid: int, role: str) -> None:
    """Append ``pid`` to the log (one O_APPEND write: safe from many processes)."""
    path = os.environ.get(PID_LOG_ENV)
    started = start_time(pid)
    if not path or started is None:
        return
    line = f"{pid} {started} {role}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Logged:
    pid: int
    started: int
    role: str

    def alive(self) -> bool:
        """Still the same process, and not a zombie waiting to be reaped."""
        if start_time(self.pid) != self.started:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"


def read(path: Path) -> list[Logged]:
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            entries.append(Logged(int(parts[0]), int(parts[1]), parts[2]))
    return entries
