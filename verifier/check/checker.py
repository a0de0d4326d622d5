"""Judge a history: the WGL search per key within a budget, cheap witnesses where it fails.

Keys are independent (memcached's ops each touch one key, and linearizability is local:
a history is linearizable iff each key's is), so each key is judged alone. A key the
budget did not cover is UNKNOWN and the others are still judged; the whole history is
VIOLATION if any key is, else UNKNOWN if any key is, else OK.

Budget: first pass, each remaining key gets an equal share of the time left; keys that ran
out get a second try with what the fast ones left over.

Order: the cheap rules (cheap.py) are sound, so on a key the search finds linearizable
they cannot fire; they run only on keys the search did not clear (violation or budget
spent), where they name the class and give a two- or three-op witness, even on a key the
search could not finish. Running them first on every key cost more than the search
itself: on 10^5 correct ops over 1,000 keys, 0.70 s of CPU for the rules, 0.33 s for the search.

The model starts every key missing: the workload must use keys nothing stored before the
history began.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.check.cheap import cheap_witnesses
from verifier.check.history import Op, OpKind, Result, read_history
from verifier.check.models import ALLOWED, MemcachedKey, encode
from verifier.check.search import SearchResult, StuckPoint, search
from verifier.check.witness import Witness, brief, make_witness
from verifier.errors import BadInput
from verifier.vocabulary import CheckOutcome, VerdictKind, WrongClass

DEFAULT_BUDGET_S = 60.0
MAX_WITNESS_OPS = 6


@dataclass
class CheckReport:
    verdict: CheckOutcome
    keys: int
    ops: int
    seconds: float
    violations: list[Witness] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)
    cheap_keys: int = 0  # keys the cheap rules looked at (those the search did not clear)
    steps: int = 0  # search steps over all keys
    may_vanish: bool = False

    @property
    def verdict_kind(self) -> VerdictKind | None:
        """WRONG RESULT when a violation is proven; None otherwise (not a verdict alone)."""
        return VerdictKind.WRONG if self.verdict is CheckOutcome.VIOLATION else None

    def describe(self) -> list[str]:
        rate = self.ops / self.seconds if self.seconds > 0 else float("inf")
        head = (
            f"checker: {self.verdict} - {self.ops} ops over {self.keys} keys in "
            f"{self.seconds:.2f} s ({rate:,.0f} ops/s)"
        )
        lines = [head]
        if self.may_vanish:
            lines.append("  keys may vanish (evictions/expiry/flush): MISS answers not judged")
        for w in self.violations:
            lines += [
                f"  WRONG RESULT {line}" if i == 0 else f"  {line}"
                for i, line in enumerate(w.describe())
            ]
        if self.unknown_keys:
            shown = ", ".join(self.unknown_keys[:10])
            more = f" (+{len(self.unknown_keys) - 10})" if len(self.unknown_keys) > 10 else ""
            lines.append(f"  unknown (budget spent): {shown}{more}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "keys": self.keys,
            "ops": self.ops,
            "seconds": self.seconds,
            "violations": [w.to_json() for w in self.violations],
            "unknown_keys": list(self.unknown_keys),
            "cheap_keys": self.cheap_keys,
            "steps": self.steps,
            "may_vanish": self.may_vanish,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckReport:
        return cls(
            verdict=CheckOutcome(data["verdict"]),
            keys=int(data["keys"]),
            ops=int(data["ops"]),
            seconds=float(data["seconds"]),
            violations=[Witness.from_json(w) for w in data.get("violations", [])],
            unknown_keys=list(data.get("unknown_keys", [])),
            cheap_keys=int(data.get("cheap_keys", 0)),
            steps=int(data.get("steps", 0)),
            may_vanish=bool(data.get("may_vanish", False)),
        )


_NEEDS: dict[OpKind, tuple[str, ...]] = {
    OpKind.SET: ("value",),
    OpKind.ADD: ("value",),
    OpKind.REPLACE: ("value",),
    OpKind.APPEND: ("value",),
    OpKind.PREPEND: ("value",),
    OpKind.CAS: ("value", "cas"),
    OpKind.INCR: ("delta",),
    OpKind.DECR: ("delta",),
    OpKind.INCR_INIT: ("delta", "initial"),
}


def validate(op: Op) -> None:
    """Refuse an op the model cannot read (one line, BadInput)."""
    problem = _problem(op)
    if problem:
        raise BadInput(f"history: {op.client} {op.kind} {op.key}: {problem}")


def _problem(op: Op) -> str:
    result, ret = op.result, op.return_ns
    if result is not Result.UNKNOWN and result not in ALLOWED[op.kind]:
        return f"{op.kind} cannot answer {result}"
    if ret is None and result is not Result.UNKNOWN:
        return f"no return time but an answer ({result})"
    if ret is not None and ret < op.call_ns:
        return "returned before it was called"
    for name in _NEEDS.get(op.kind, ()):
        if getattr(op, name) is None:
            return f"missing {name}"
    if result is Result.HIT:
        if op.value is None:
            return "a hit without its value"
        if op.kind is OpKind.GETS and op.cas is None:
            return "a gets hit without its cas token"
    if result is Result.NUMBER and op.number is None:
        return "a number answer without its number"
    return ""


def _normalise(op: Op) -> Op:
    """An UNKNOWN answer with a return time is indeterminate all the same."""
    if op.result is Result.UNKNOWN and op.return_ns is not None:
        return dataclasses.replace(op, return_ns=None)
    return op


def _search_key(ops: Sequence[Op], model: MemcachedKey, deadline: float) -> SearchResult:
    return search(
        [o.call_ns for o in ops],
        [o.return_ns for o in ops],
        [encode(o) for o in ops],
        model,
        deadline,
    )


def _search_witness(
    key: str, ops: Sequence[Op], stuck: StuckPoint, model: MemcachedKey, origin: int
) -> Witness:
    """The ops around the deepest dead end, with the state there, in one sentence."""
    blocking = ops[stuck.blocking]
    picked: list[int] = []
    for i in (*stuck.last, stuck.blocking, *stuck.pending):
        if i not in picked and len(picked) < MAX_WITNESS_OPS:
            picked.append(i)
    state = model.describe_state(stuck.state)
    wrong = WrongClass.NOT_LINEARIZABLE
    if (
        blocking.kind is OpKind.GETS
        and blocking.result is Result.HIT
        and stuck.state[0] is not None
        and (blocking.value or "").replace(" ", "") == stuck.state[0].replace(" ", "")
    ):
        wrong = WrongClass.CAS_CHANGED
    twin = _same_answer(ops, stuck.blocking)
    if twin is not None:
        # An arithmetic answer the search cannot place, and a concurrent twin of the same
        # kind and delta gave the same number: one of the two worked on a stale value.
        sentence = (
            f"{brief(blocking, origin)} and {brief(ops[twin], origin)} ran at the same time "
            "and answered the same number, and no order of the history explains the answers "
            "(the search found none): one update was applied to a stale value and lost"
        )
        return make_witness(
            WrongClass.LOST_UPDATE, key, (ops[twin], blocking), sentence, origin,
            found_by="search",
        )  # fmt: skip
    after = (
        f"after {stuck.linearized} ops in some valid order the key was {state}"
        if stuck.linearized
        else f"from the start (key {state})"
    )
    others = [ops[i] for i in stuck.pending if i != stuck.blocking]
    tail = (
        "; none of the ops pending then ("
        + "; ".join(brief(o, origin) for o in others)
        + ") could go first either"
        if others
        else ""
    )
    sentence = (
        f"no order explains the answers: {after}, and {brief(blocking, origin)} "
        f"could not be ordered before it returned{tail}"
    )
    order = " -> ".join(f"{ops[i].client} {ops[i].kind}" for i in stuck.last)
    notes = [f"deepest order found ends: {order} (key then {state})"] if order else []
    return make_witness(
        wrong, key, (ops[i] for i in picked), sentence, origin, found_by="search", notes=notes
    )


_ARITHMETIC = (OpKind.INCR, OpKind.DECR, OpKind.INCR_INIT)


def _same_answer(ops: Sequence[Op], index: int) -> int | None:
    """Another arithmetic op on the key, running at the same time as ``ops[index]`` (their
    call-return intervals overlap), of the same kind and delta, that answered the same
    number (None when the stuck op has no such twin). A twin further away in time proves
    nothing: a counter may come back to a number after a set or a decr."""
    op = ops[index]
    if op.kind not in _ARITHMETIC or op.result is not Result.NUMBER or op.return_ns is None:
        return None
    for i, other in enumerate(ops):
        if (
            i != index
            and other.kind is op.kind
            and other.delta == op.delta
            and other.result is Result.NUMBER
            and other.number == op.number
            and other.return_ns is not None
            and other.call_ns <= op.return_ns
            and op.call_ns <= other.return_ns
        ):
            return i
    return None


def check_history(
    ops: Iterable[Op], *, may_vanish: bool = False, budget_s: float = DEFAULT_BUDGET_S
) -> CheckReport:
    """Judge ``ops`` (any order, any keys): OK, VIOLATION with witnesses, or UNKNOWN."""
    if budget_s <= 0:
        raise BadInput(f"checker budget must be positive, not {budget_s}")
    start = time.monotonic()
    deadline = start + budget_s
    per_key: dict[str, list[Op]] = defaultdict(list)
    count = 0
    for op in ops:
        validate(op)
        per_key[op.key].append(_normalise(op))
        count += 1
    origin = min((o.call_ns for key_ops in per_key.values() for o in key_ops), default=0)
    model = MemcachedKey(may_vanish=may_vanish)
    violations: list[Witness] = []
    keys = sorted(per_key)
    for key in keys:
        per_key[key].sort(key=lambda o: o.call_ns)
    steps = 0
    unknown: list[str] = []
    cheap_done: set[str] = set()
    for attempt in range(2):
        pending, unknown = keys if attempt == 0 else unknown, []
        for n, key in enumerate(pending):
            left = deadline - time.monotonic()
            if left <= 0:
                unknown += pending[n:]
                break
            key_ops = per_key[key]
            result = _search_key(key_ops, model, time.monotonic() + left / (len(pending) - n))
            steps += result.steps
            if result.outcome is CheckOutcome.OK:
                continue
            if key not in cheap_done:  # sound rules: they name the class, or prove it anyway
                cheap_done.add(key)
                found = cheap_witnesses(key_ops, origin, may_vanish=may_vanish)
                if found:
                    violations += found
                    continue
            if result.outcome is CheckOutcome.UNKNOWN:
                unknown.append(key)
            elif result.stuck is not None:
                violations.append(_search_witness(key, key_ops, result.stuck, model, origin))
        if not unknown or deadline - time.monotonic() <= 0:
            break
    for key in unknown:  # keys the budget never reached still get the cheap rules
        if key not in cheap_done:
            violations += cheap_witnesses(per_key[key], origin, may_vanish=may_vanish)
    unknown = [k for k in unknown if not any(w.key == k for w in violations)]
    if violations:
        verdict = CheckOutcome.VIOLATION
    elif unknown:
        verdict = CheckOutcome.UNKNOWN
    else:
        verdict = CheckOutcome.OK
    return CheckReport(
        verdict=verdict,
        keys=len(per_key),
        ops=count,
        seconds=time.monotonic() - start,
        violations=violations,
        unknown_keys=sorted(unknown),
        cheap_keys=len(cheap_done | set(unknown)),
        steps=steps,
        may_vanish=may_vanish,
    )


def check_files(
    paths: Iterable[Path], *, may_vanish: bool = False, budget_s: float = DEFAULT_BUDGET_S
) -> CheckReport:
    """Judge the histories in ``paths`` (JSON lines, see history.py) as one history."""
    try:
        ops = list(read_history(paths))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"history unreadable: {exc}") from exc
    return check_history(ops, may_vanish=may_vanish, budget_s=budget_s)
