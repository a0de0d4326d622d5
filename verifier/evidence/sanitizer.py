"""Reading ASan, TSan and UBSan report files into typed findings.

A report has a kind (``heap-use-after-free``, ``data race``, ``lock-order-inversion``,
``signed-integer-overflow``, ...), stacks (the access, then the previous access, the free
or the allocation, then where the memory, mutexes and threads came from) and a summary.
Its *signature* is the kind plus the top frame of each of its first two stacks (its two
accesses), function names only: no address, no line, so the same bug gives the same
signature in another build or commit. Top frames are memcached's own: frames of the
sanitizer runtime, libc and libevent (``__interceptor_free``, ``<null>``) are skipped.

Measured on Debian's 1.6.18 under a 20 s flood: TSan wrote 74 reports with 32 distinct
signatures (23 of them ``data-race:conn_new/conn_new``), races in connection setup, stats
counters and clocks; the signature is what tells the one hunted from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.vocabulary import Sanitizer

_ASAN_RE = re.compile(r"^==(\d+)==ERROR: AddressSanitizer: (\S+)(.*)$")
_TSAN_RE = re.compile(r"^WARNING: ThreadSanitizer: (.+?) \(pid=(\d+)\)")
_UBSAN_RE = re.compile(r"^(\S+?):(\d+)(?::\d+)?: runtime error: (.+)$")
_FRAME_RE = re.compile(r"^\s*#(\d+)\s+(.*)$")
_SUMMARY_RE = re.compile(r"^SUMMARY: \w+: (.*)$")
_MODULE_RE = re.compile(r"\(([^()]*)\)\s*$")
_FOREIGN_PREFIXES = ("__interceptor_", "__asan", "__tsan", "__ubsan", "__sanitizer", "<null>")
_FOREIGN_LIBS = ("libc.so", "libpthread", "ld-linux", "libevent", "libasan", "libtsan", "libubsan")
# the class a verdict names, from the report's kind
_CLASSES = {
    "heap-use-after-free": "use-after-free",
    "use-after-poison": "use-after-free",
    "stack-use-after-return": "use-after-free",
    "stack-use-after-scope": "use-after-free",
    "heap-buffer-overflow": "buffer-overflow",
    "stack-buffer-overflow": "buffer-overflow",
    "global-buffer-overflow": "buffer-overflow",
    "attempting-double-free": "double-free",
    "double-free": "double-free",
    "data-race": "data-race",
    "lock-order-inversion": "lock-order-inversion",
}


@dataclass(frozen=True)
class Frame:
    function: str  # "??" when the runtime could not name it
    location: str  # file:line, the file's base name only ("" when unknown)
    module: str = ""  # the shared object for frames outside the binary

    @property
    def own(self) -> bool:
        """memcached's own code, not the sanitizer runtime, libc or libevent."""
        if self.function.startswith(_FOREIGN_PREFIXES) or self.function == "??":
            return False
        if any(lib in self.module for lib in _FOREIGN_LIBS):
            return False
        return "libsanitizer" not in self.location and not self.location.endswith(".cpp")

    def render(self) -> str:
        return f"{self.function} ({self.location or self.module or '?'})"


@dataclass(frozen=True)
class Stack:
    title: str  # "READ of size 1 ... thread T3", "freed by thread T3 here:", ...
    frames: tuple[Frame, ...]

    @property
    def top(self) -> str:
        """The first of memcached's own functions (else the first frame's)."""
        own = [f for f in self.frames if f.own]
        chosen = own[0] if own else (self.frames[0] if self.frames else None)
        return chosen.function if chosen else "??"


@dataclass(frozen=True)
class SanitizerFinding:
    """One report: what, where (the stacks), and the file it was read from."""

    tool: Sanitizer
    kind: str  # as the report names it, as a slug: heap-use-after-free, data-race, ...
    summary: str  # the SUMMARY line, paths cut to base names
    stacks: tuple[Stack, ...]
    pid: int
    report: str  # the report file

    @property
    def finding_class(self) -> str:
        """The verdict's class: use-after-free, buffer-overflow, data-race, ... (UBSan and
        kinds without a coarser name keep their own)."""
        return _CLASSES.get(self.kind, self.kind)

    @property
    def fatal(self) -> bool:
        """ASan halts at its first report (halt_on_error=1); TSan and UBSan run on."""
        return self.tool is Sanitizer.ADDRESS

    @property
    def accesses(self) -> tuple[Stack, ...]:
        """The two stacks that make the bug: the access and the previous access (or free,
        or allocation); for a lock-order inversion, the two acquisitions that close the
        cycle (with second_deadlock_stack=1 each is followed by where the held lock was
        taken)."""
        stacks = self.stacks
        if self.kind == "lock-order-inversion":
            stacks = tuple(s for s in stacks if "acquired here while holding" in s.title) or stacks
        return stacks[:2]

    @property
    def signature(self) -> str:
        """``kind:top1/top2``: the top own frames of the two accesses; a race's or an
        inversion's two in sorted order (which thread came first is chance)."""
        tops = [s.top for s in self.accesses]
        if self.kind in ("data-race", "lock-order-inversion"):
            tops.sort()
        return f"{self.kind}:{'/'.join(tops)}"

    def matches(self, wanted: str) -> bool:
        """``wanted`` is a signature, a kind or a class."""
        return wanted in (self.signature, self.kind, self.finding_class)

    def render(self, frames: int = 8) -> str:
        lines = [f"{self.tool} sanitizer: {self.kind} (pid {self.pid}): {self.summary}"]
        for stack in self.stacks:
            lines.append(f"  {stack.title}")
            lines += [f"    {frame.render()}" for frame in stack.frames[:frames]]
        lines.append(f"  report: {self.report}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": str(self.tool),
            "kind": self.kind,
            "class": self.finding_class,
            "signature": self.signature,
            "summary": self.summary,
            "pid": self.pid,
            "report": self.report,
            "stacks": [
                {
                    "title": s.title,
                    "frames": [[f.function, f.location, f.module] for f in s.frames],
                }
                for s in self.stacks
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SanitizerFinding:
        return cls(
            Sanitizer(data["tool"]),
            str(data["kind"]),
            str(data.get("summary", "")),
            tuple(
                Stack(str(s["title"]), tuple(Frame(*map(str, f)) for f in s["frames"]))
                for s in data.get("stacks", [])
            ),
            int(data.get("pid", 0)),
            str(data.get("report", "")),
        )


def _slug(text: str) -> str:
    text = text.split(" (", 1)[0].split(":", 1)[0].strip().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def _ubsan_kind(message: str) -> str:
    """ "signed integer overflow: 2147483647 + 1 ..." -> signed-integer-overflow; messages
    without a colon keep their first words ("load of misaligned address ...")."""
    head = message.split(":", 1)[0] if ":" in message else " ".join(message.split()[:4])
    return _slug(re.sub(r"\s+(?:0x[0-9a-f]+|-?\d+)\b.*$", "", head))


def _base(location: str) -> str:
    return location.rsplit("/", 1)[-1]


def parse_frame(text: str) -> Frame:
    """One ``#N`` line's rest, ASan (``0xADDR in func file:line``) or TSan
    (``func file:line (module+0xOFF)``)."""
    module_match = _MODULE_RE.search(text)
    module = module_match[1] if module_match else ""
    if module_match:
        text = text[: module_match.start()]
    words = text.split()
    if words and words[0].startswith("0x"):
        words = words[1:]
    if words and words[0] == "in":
        words = words[1:]
    function = words[0] if words else "??"
    location = _base(words[1]) if len(words) > 1 else ""
    if location == "<null>":
        location = ""
    return Frame(function, location, _base(module.split("+", 1)[0]))


class _Builder:
    def __init__(self, tool: Sanitizer, kind: str, pid: int, report: str, title: str) -> None:
        self.tool, self.kind, self.pid, self.report = tool, kind, pid, report
        self.stacks: list[Stack] = []
        self.frames: list[Frame] = []
        self.title = title
        self.summary = ""

    def frame(self, index: int, rest: str, last_text: str) -> None:
        if index == 0:
            self.close_stack()
            self.title = last_text
        self.frames.append(parse_frame(rest))

    def close_stack(self) -> None:
        if self.frames:
            self.stacks.append(Stack(self.title, tuple(self.frames)))
        self.frames = []

    def finish(self) -> SanitizerFinding:
        self.close_stack()
        return SanitizerFinding(
            self.tool, self.kind, self.summary, tuple(self.stacks), self.pid, self.report
        )


def parse_report(text: str, report: str = "", pid: int = 0) -> list[SanitizerFinding]:
    """Every finding in one report file's text, in order."""
    findings: list[SanitizerFinding] = []
    current: _Builder | None = None
    last_text = ""
    for line in text.splitlines():
        stripped = line.strip()
        asan, tsan, ubsan = _ASAN_RE.match(line), _TSAN_RE.match(line), _UBSAN_RE.match(line)
        start: _Builder | None = None
        if asan:
            start = _Builder(Sanitizer.ADDRESS, _slug(asan[2]), int(asan[1]), report, "")
        elif tsan:
            start = _Builder(Sanitizer.THREAD, _slug(tsan[1]), int(tsan[2]), report, "")
        elif ubsan:
            kind = _ubsan_kind(ubsan[3])
            where = f"{_base(ubsan[1])}:{ubsan[2]}"
            start = _Builder(Sanitizer.UNDEFINED, kind, pid, report, f"{ubsan[3]} at {where}")
        if start is not None:
            if current is not None:
                findings.append(current.finish())
            current = start
            last_text = current.title
            continue
        if current is None:
            continue
        frame = _FRAME_RE.match(line)
        summary = _SUMMARY_RE.match(stripped)
        if frame:
            current.frame(int(frame[1]), frame[2], last_text)
        elif summary:
            current.summary = re.sub(r"\S*/(\S+)", r"\1", summary[1])
            findings.append(current.finish())
            current = None
        elif stripped and not stripped.startswith("==="):
            last_text = stripped
    if current is not None:
        findings.append(current.finish())
    return findings


def read_reports(files: list[Path]) -> list[SanitizerFinding]:
    """The findings of every report file (``<prefix>.<pid>``), oldest file first."""
    findings: list[SanitizerFinding] = []
    for path in files:
        suffix = path.name.rsplit(".", 1)[-1]
        pid = int(suffix) if suffix.isdigit() else 0
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        findings += parse_report(text, str(path), pid)
    return findings


def distinct(findings: list[SanitizerFinding]) -> dict[str, int]:
    """How many reports each signature had, most frequent first."""
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.signature] = counts.get(finding.signature, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
