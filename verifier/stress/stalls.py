"""Stalled connections: a long-lived connection whose replies timed out is kept open (idle,
no more sends) so the harness can read the server's side of it before the flood ends.

Each flood process writes its stalls to ``stalls-<index>.json`` beside its tallies, at
every flush; ``late_bytes`` counts what arrived on a kept connection after its timeout (a
reply that was only late, e.g. a starved client loop, is then no stall). At most
``MAX_KEPT`` connections are kept per process: later timeouts are dropped as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MAX_KEPT = 4  # per flood process: a stall proves as much once as forty times


@dataclass
class Stall:
    """One kept connection whose replies did not come within the reply timeout."""

    group: str
    client: str
    local_port: int  # the client's end: the server's row in /proc/net/tcp names it
    server_port: int  # the port it connected to (TLS or plain)
    tls: bool
    requests: int  # requests sent in the batch that timed out
    answered: int  # of those, answered before the timeout
    bytes_sent: int  # the batch's request bytes (before TLS)
    unsent: int  # bytes still in the client's own write buffer at the timeout
    waited_s: float
    at: float  # wall-clock time of the timeout (time.time())
    late_bytes: int = 0  # received after the timeout (while kept)

    @property
    def outstanding(self) -> int:
        return self.requests - self.answered

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stall:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def stall_path(directory: Path, index: int) -> Path:
    return directory / f"stalls-{index}.json"


def write_stalls(path: Path, stalls: Iterable[Stall]) -> None:
    tmp = path.with_suffix(".tmp-stalls")
    tmp.write_text(json.dumps([s.to_json() for s in stalls]), encoding="utf-8")
    tmp.replace(path)


def read_stalls(directory: Path) -> list[Stall]:
    """Every process's stalls (a file being replaced or unreadable is skipped)."""
    found: list[Stall] = []
    for path in sorted(directory.glob("stalls-*.json")):
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            found += [Stall.from_json(row) for row in rows]
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return found
