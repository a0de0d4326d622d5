"""A WRONG RESULT's witness: the few operations that cannot be ordered, as a plain record.

A witness is proof in the way a lock cycle is: a person can read the operations, their
clients and times, and see that no order explains the answers. Times are seconds from an
origin the caller gives (the history's first call), so they match the soak's timeline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from verifier.check.history import Op, OpKind, Result
from verifier.vocabulary import WrongClass


@dataclass(frozen=True, slots=True)
class WitnessOp:
    """One operation of a witness, as a person reads it."""

    client: str
    kind: str
    args: str  # "ctr:1 by 1", "k:3 = 'p1:7'", ...
    result: str  # "-> 10", "-> HIT 'p0:2' cas 17", "-> no reply"
    call_s: float
    return_s: float | None  # None: indeterminate (no reply)

    def line(self) -> str:
        end = "?" if self.return_s is None else f"{self.return_s:.6f}"
        return f"{self.client} {self.kind} {self.args} {self.result} [{self.call_s:.6f}-{end} s]"

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "kind": self.kind,
            "args": self.args,
            "result": self.result,
            "call_s": self.call_s,
            "return_s": self.return_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WitnessOp:
        return cls(
            client=data["client"],
            kind=data["kind"],
            args=data["args"],
            result=data["result"],
            call_s=float(data["call_s"]),
            return_s=None if data.get("return_s") is None else float(data["return_s"]),
        )


@dataclass(frozen=True, slots=True)
class Witness:
    """Class, key, the few operations, and one sentence saying why they cannot be ordered."""

    wrong: WrongClass
    key: str
    ops: tuple[WitnessOp, ...]
    sentence: str
    found_by: str = "cheap"  # "cheap" (a rule, no search) or "search" (WGL found no order)
    notes: tuple[str, ...] = field(default=())

    @property
    def bug_key(self) -> str:
        """What two WRONG RESULTs of the same bug share (bisect keeps bugs apart by it): the
        family of keys (the key up to its last ':', which a workload group's prefix sets),
        not the class. One race shows under either name: on upstream 1.4.5 the incr race
        gave lost-update when the cheap rule saw two increments answer alike and
        not-linearizable when only the search did (3 and 4 of 7 runs), and a find-fix
        bisect keyed by class stopped at its bad end on "different bug"."""
        family = self.key.rsplit(":", 1)[0] if ":" in self.key else self.key
        return f"wrong:{family}"

    def describe(self) -> list[str]:
        lines = [f"{self.wrong} on key {self.key} ({self.found_by}): {self.sentence}"]
        lines += [f"    {op.line()}" for op in self.ops]
        lines += [f"    {note}" for note in self.notes]
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "class": str(self.wrong),
            "key": self.key,
            "ops": [op.to_json() for op in self.ops],
            "sentence": self.sentence,
            "found_by": self.found_by,
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Witness:
        return cls(
            wrong=WrongClass(data["class"]),
            key=data["key"],
            ops=tuple(WitnessOp.from_json(o) for o in data["ops"]),
            sentence=data["sentence"],
            found_by=data.get("found_by", "cheap"),
            notes=tuple(data.get("notes", ())),
        )


def _short(value: str | None, limit: int = 40) -> str:
    if value is None:
        return "None"
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def op_args(op: Op) -> str:
    """What the operation asked, in memcached's words."""
    k = op.kind
    if k in (OpKind.GET, OpKind.GETS, OpKind.DELETE, OpKind.TOUCH):
        return op.key
    if k in (OpKind.INCR, OpKind.DECR):
        return f"{op.key} by {op.delta}"
    if k is OpKind.INCR_INIT:
        return f"{op.key} by {op.delta} initial {op.initial}"
    if k is OpKind.CAS:
        return f"{op.key} = {_short(op.value)} if cas {op.cas}"
    return f"{op.key} = {_short(op.value)}"


def op_result(op: Op) -> str:
    """What the server answered."""
    r = op.result
    if r is Result.UNKNOWN:
        return "-> no reply"
    if r is Result.NUMBER:
        return f"-> {op.number}"
    if r is Result.HIT:
        token = f" cas {op.cas}" if op.kind is OpKind.GETS else ""
        return f"-> HIT {_short(op.value)}{token}"
    return f"-> {r.name}"


def witness_op(op: Op, origin_ns: int) -> WitnessOp:
    return WitnessOp(
        client=op.client,
        kind=str(op.kind),
        args=op_args(op),
        result=op_result(op),
        call_s=(op.call_ns - origin_ns) / 1e9,
        return_s=None if op.return_ns is None else (op.return_ns - origin_ns) / 1e9,
    )


def make_witness(
    wrong: WrongClass,
    key: str,
    ops: Iterable[Op],
    sentence: str,
    origin_ns: int,
    *,
    found_by: str = "cheap",
    notes: Iterable[str] = (),
) -> Witness:
    """A witness whose operations are listed in call order."""
    ordered = sorted(ops, key=lambda o: o.call_ns)
    return Witness(
        wrong=wrong,
        key=key,
        ops=tuple(witness_op(o, origin_ns) for o in ordered),
        sentence=sentence,
        found_by=found_by,
        notes=tuple(notes),
    )


def brief(op: Op, origin_ns: int) -> str:
    """One op in a sentence: ``p0.c.3 incr ctr:1 by 1 -> 10 [1.203-1.204 s]``."""
    w = witness_op(op, origin_ns)
    end = "?" if w.return_s is None else f"{w.return_s:.3f}"
    return f"{w.client} {w.kind} {w.args} {w.result} [{w.call_s:.3f}-{end} s]"
