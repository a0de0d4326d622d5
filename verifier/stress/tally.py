"""What the workload clients saw, per group and command: answers by status, errors by
kind, latency percentiles (HdrHistogram, the histogram memtier and wrk use).

Each flood process keeps ``Tally``s and writes them to ``clients-<index>.json`` when it
stops; the parent merges the files into one ``ClientReport``, the typed record the trial,
the verdict and the report read. Measured here: one ``record_value`` costs about 2.7 us, so
latency is recorded for every request (a 20k requests/s process spends ~5% on it).
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from verifier.stress.protocol.base import ERRORS, Status

LATENCY_MAX_US = 60_000_000
TIMEOUT = "timeout"  # no reply within the reply timeout
CLOSED = "closed"  # the connection died before the reply
CONNECT_FAILED = "connect-failed"
ABANDONED = "abandoned"  # sent, then the connection dropped unread (a group's `abandon`)


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, LATENCY_MAX_US, 2)


class Tally:
    """One (group, command): counts by outcome and a latency histogram (microseconds)."""

    __slots__ = ("counts", "latency")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.latency = _histogram()

    def answered(self, status: Status, latency_us: int) -> None:
        self.counts[status] += 1
        self.latency.record_value(min(max(latency_us, 1), LATENCY_MAX_US))

    def failed(self, why: str) -> None:
        self.counts[why] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "latency": base64.b64encode(self.latency.encode()).decode(),
        }


@dataclass(frozen=True)
class CommandSeen:
    """What one command of one group got back, over a trial."""

    group: str
    command: str
    protocol: str
    counts: dict[str, int]  # by Status value, plus timeout / closed / connect-failed
    p50_us: int = 0
    p99_us: int = 0
    p999_us: int = 0
    max_us: int = 0

    @property
    def sent(self) -> int:
        return sum(self.counts.values())

    @property
    def answered(self) -> int:
        """Answered in the protocol (errors from the server count: it answered)."""
        gone = (TIMEOUT, CLOSED, CONNECT_FAILED, ABANDONED)
        return sum(n for k, n in self.counts.items() if k not in gone)

    @property
    def ok(self) -> int:
        """Answered without an error status (a miss or BUSY is a normal answer)."""
        return sum(
            n for k, n in self.counts.items() if k in {s.value for s in Status} - set(ERRORS)
        )

    @property
    def errors(self) -> dict[str, int]:
        bad = {str(s) for s in ERRORS} | {TIMEOUT, CLOSED, CONNECT_FAILED}
        return {k: n for k, n in self.counts.items() if k in bad and n}

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "command": self.command,
            "protocol": self.protocol,
            "counts": self.counts,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CommandSeen:
        return cls(
            data["group"],
            data["command"],
            data.get("protocol", "ascii"),
            {str(k): int(v) for k, v in data["counts"].items()},
            int(data.get("p50_us", 0)),
            int(data.get("p99_us", 0)),
            int(data.get("p999_us", 0)),
            int(data.get("max_us", 0)),
        )


@dataclass
class ClientReport:
    """Every group's commands over a trial (merged from every flood process)."""

    commands: list[CommandSeen] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # not in this build: never sent
    history_ops: int = 0  # operations recorded for the checker
    processes_reporting: int = 0
    processes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "commands": [c.to_json() for c in self.commands],
            "left_out": self.left_out,
            "history_ops": self.history_ops,
            "processes_reporting": self.processes_reporting,
            "processes": self.processes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ClientReport | None:
        if not data:
            return None
        return cls(
            [CommandSeen.from_json(c) for c in data.get("commands", [])],
            list(data.get("left_out", [])),
            int(data.get("history_ops", 0)),
            int(data.get("processes_reporting", 0)),
            int(data.get("processes", 0)),
        )


def tally_path(directory: Path, index: int) -> Path:
    return directory / f"clients-{index}.json"


def write_tallies(path: Path, tallies: dict[tuple[str, str, str], Tally], history_ops: int) -> None:
    data = {
        "tallies": [
            {"group": g, "command": c, "protocol": p, **t.to_json()}
            for (g, c, p), t in tallies.items()
        ],
        "history_ops": history_ops,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def merge_tallies(paths: Iterable[Path], processes: int) -> ClientReport:
    """One report from every process's file (a process that died wrote none: counted)."""
    counts: dict[tuple[str, str, str], Counter[str]] = {}
    latency: dict[tuple[str, str, str], HdrHistogram] = {}
    reporting = history = 0
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        reporting += 1
        history += int(data.get("history_ops", 0))
        for row in data.get("tallies", []):
            key = (row["group"], row["command"], row.get("protocol", "ascii"))
            counts.setdefault(key, Counter()).update(row["counts"])
            hist = latency.setdefault(key, _histogram())
            hist.add(HdrHistogram.decode(base64.b64decode(row["latency"])))
    commands = []
    for key, count in counts.items():
        hist = latency[key]
        has = hist.get_total_count() > 0
        commands.append(
            CommandSeen(
                key[0],
                key[1],
                key[2],
                dict(count),
                hist.get_value_at_percentile(50) if has else 0,
                hist.get_value_at_percentile(99) if has else 0,
                hist.get_value_at_percentile(99.9) if has else 0,
                hist.get_max_value() if has else 0,
            )
        )
    commands.sort(key=lambda c: (c.group, -c.sent))
    return ClientReport(
        commands, history_ops=history, processes_reporting=reporting, processes=processes
    )
