"""Backtraces of every thread and the values of named variables, via ``gdb -batch``."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from verifier.util.proc import run

GDB_TIMEOUT_S = 60.0
DEFAULT_DEBUG_DIR = "/usr/lib/debug"  # libc6-dbg and other -dbgsym packages
_THREAD_RE = re.compile(
    r"^Thread (?P<num>\d+) \(Thread 0x[0-9a-f]+ \(LWP (?P<lwp>\d+)\)(?: \"(?P<name>[^\"]*)\")?\)"
)
_FRAME_RE = re.compile(
    r"^#(?P<n>\d+)\s+(?:0x[0-9a-f]+ in )?(?P<func>[A-Za-z_][\w.@]*|\?\?) \((?P<args>.*?)\)"
    r"(?: (?:at|from) (?P<where>\S+))?"
)
_VALUE_RE = re.compile(r"^VAR (?P<name>\w+) =\s*(?P<value>.*)$")


@dataclass(frozen=True)
class Frame:
    index: int
    function: str
    args: str
    where: str


@dataclass
class ThreadStack:
    number: int
    lwp: int
    name: str
    frames: list[Frame] = field(default_factory=list)

    @property
    def functions(self) -> list[str]:
        return [frame.function for frame in self.frames]


@dataclass
class GdbDump:
    text: str
    threads: list[ThreadStack]
    variables: dict[str, str]
    ok: bool


def stack_functions(text: str) -> frozenset[str]:
    """The functions named in the frames of a backtrace's text (indented or not)."""
    found = (_FRAME_RE.match(line.strip()) for line in text.splitlines())
    return frozenset(m["func"] for m in found if m and m["func"] != "??")


def available() -> bool:
    return shutil.which("gdb") is not None


def dump(pid: int, variables: tuple[str, ...] = (), debug_dir: Path | None = None) -> GdbDump:
    """Attach, print all stacks and the variables, detach. The process keeps running after.
    ``debug_dir``: where separate debug info lies (a ``.build-id`` tree), for a stripped
    binary."""
    if not available():
        return GdbDump("gdb not installed (apt-get install gdb)", [], {}, False)
    argv = [
        "gdb",
        "-nx",
        "-q",
        "-batch",
        "-p",
        str(pid),
        *(
            ["-iex", f"set debug-file-directory {debug_dir}:{DEFAULT_DEBUG_DIR}"]
            if debug_dir
            else []
        ),
        "-ex",
        "set pagination off",
        "-ex",
        "set print thread-events off",
        "-ex",
        "info threads",
        "-ex",
        "thread apply all bt",
    ]
    for name in variables:
        argv += ["-ex", f"echo VAR {name} = ", "-ex", f"output (long) {name}", "-ex", "echo \\n"]
    result = run(argv, timeout_s=GDB_TIMEOUT_S)
    text = result.output + ("\n[gdb timed out]" if result.timed_out else "")
    return GdbDump(text, parse_backtraces(text), parse_variables(text), result.ok)


def parse_backtraces(text: str) -> list[ThreadStack]:
    threads: list[ThreadStack] = []
    current: ThreadStack | None = None
    for line in text.splitlines():
        if match := _THREAD_RE.match(line):
            current = ThreadStack(int(match["num"]), int(match["lwp"]), match["name"] or "")
            threads.append(current)
        elif current is not None and (match := _FRAME_RE.match(line)):
            current.frames.append(
                Frame(int(match["n"]), match["func"], match["args"], match["where"] or "")
            )
    return threads


def thread_excerpt(text: str, lwp: int | None, max_frames: int = 12) -> str:
    """One thread's backtrace (by LWP) from a dump, addresses dropped, for a report."""
    if lwp is None:
        return ""
    lines = text.splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if line.startswith("Thread ") and f"(LWP {lwp})" in line
        ),
        None,
    )
    if start is None:
        return ""
    shown = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("#") or len(shown) > max_frames:
            break
        shown.append(line)
    return "\n".join("    " + re.sub(r"0x[0-9a-f]{12,16} in ", "", line) for line in shown)


def parse_variables(text: str) -> dict[str, str]:
    """``VAR name = value`` lines; a name gdb could not read (no such symbol) is left out."""
    values = {}
    for line in text.splitlines():
        m = _VALUE_RE.match(line)
        value = m["value"].strip() if m else ""
        if m and value and not value.startswith(("No symbol", "Cannot access")):
            values[m["name"]] = value
    return values
