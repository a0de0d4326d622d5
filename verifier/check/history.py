"""The history the workload clients record for the checker: one ``Op`` per checked request.

Times are CLOCK_MONOTONIC nanoseconds (``time.monotonic_ns()``), the same clock in every
process on the machine, so operations of different flood processes order correctly.
An op whose reply never came (timeout, connection lost) is *indeterminate*:
``return_ns`` is None; it may or may not have taken effect, at any time after its call.
Values written by checked clients are unique per write ("<client>:<seq>" or a number for
counters), so a read names the write it saw.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class OpKind(enum.StrEnum):
    GET = "get"  # result: HIT value / MISS
    GETS = "gets"  # result: HIT value + cas / MISS
    SET = "set"  # STORED
    ADD = "add"  # STORED / NOT_STORED
    REPLACE = "replace"  # STORED / NOT_STORED
    APPEND = "append"  # STORED / NOT_STORED
    PREPEND = "prepend"  # STORED / NOT_STORED
    CAS = "cas"  # STORED / EXISTS / NOT_FOUND
    INCR = "incr"  # NUMBER n / NOT_FOUND
    DECR = "decr"  # NUMBER n / NOT_FOUND (memcached clamps at 0)
    INCR_INIT = "incr-init"  # binary incr with an initial value: NUMBER n (created or added)
    DELETE = "delete"  # DELETED / NOT_FOUND
    TOUCH = "touch"  # TOUCHED / NOT_FOUND (no change of value)


class Result(enum.StrEnum):
    HIT = "hit"
    MISS = "miss"
    STORED = "stored"
    NOT_STORED = "not-stored"
    EXISTS = "exists"
    NOT_FOUND = "not-found"
    DELETED = "deleted"
    TOUCHED = "touched"
    NUMBER = "number"
    UNKNOWN = "unknown"  # indeterminate: no reply (return_ns is None)


@dataclass(frozen=True, slots=True)
class Op:
    client: str  # who: "p<process>.<group>.<client>"
    key: str
    kind: OpKind
    call_ns: int
    return_ns: int | None  # None: indeterminate
    result: Result
    value: str | None = None  # written (set/add/replace/append/prepend/cas), or read (HIT)
    cas: int | None = None  # cas: the token sent; gets: the token read
    delta: int | None = None  # incr/decr/incr-init
    initial: int | None = None  # incr-init
    number: int | None = None  # NUMBER: the value answered
    protocol: str = "ascii"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "client": self.client,
            "key": self.key,
            "kind": str(self.kind),
            "call_ns": self.call_ns,
            "return_ns": self.return_ns,
            "result": str(self.result),
        }
        for name in ("value", "cas", "delta", "initial", "number"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.protocol != "ascii":
            data["protocol"] = self.protocol
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        return cls(
            client=data["client"],
            key=data["key"],
            kind=OpKind(data["kind"]),
            call_ns=int(data["call_ns"]),
            return_ns=None if data.get("return_ns") is None else int(data["return_ns"]),
            result=Result(data["result"]),
            value=data.get("value"),
            cas=data.get("cas"),
            delta=data.get("delta"),
            initial=data.get("initial"),
            number=data.get("number"),
            protocol=data.get("protocol", "ascii"),
        )


def write_history(path: Path, ops: Iterable[Op]) -> int:
    """Append ``ops`` as JSON lines; how many were written."""
    n = 0
    with path.open("a", encoding="utf-8") as f:
        for op in ops:
            f.write(json.dumps(op.to_json(), separators=(",", ":")) + "\n")
            n += 1
    return n


def read_history(paths: Iterable[Path]) -> Iterator[Op]:
    for path in paths:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a process killed mid-write: its last line is cut
                if line.strip():
                    yield Op.from_json(json.loads(line))
