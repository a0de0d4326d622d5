"""Witnesses that need no search: rules over one key's ops in O(n log n).

Each rule names a pair (or triple) of operations and checks, with an interval index, that
no other operation able to explain them could fall between them in any order. "Could fall
between" is read generously (any op whose interval meets the pair's span), so a rule may
miss a violation (the search still sees it) but never reports one that is not.

Soundness under ``may_vanish`` (evictions, expiry, flush_all: a key may vanish any time):
lost-update, lost-delete, stale-read, impossible-value and cas-changed stay sound (a vanish
only removes; every rule needs a value or a number that some write must explain);
double-create does not (a vanish between two creations makes both right) and is skipped.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Sequence
from itertools import pairwise

from verifier.check.history import Op, OpKind, Result
from verifier.check.witness import Witness, brief, make_witness
from verifier.vocabulary import WrongClass

INF = float("inf")
_STORES = (OpKind.SET, OpKind.ADD, OpKind.REPLACE, OpKind.APPEND, OpKind.PREPEND, OpKind.CAS)


def _ret(op: Op) -> float:
    return INF if op.return_ns is None else op.return_ns


def changes(op: Op) -> bool:
    """Could this op have changed the key's value or cas token (indeterminate ops could)?"""
    r = op.result
    if op.kind in _STORES:
        return r in (Result.STORED, Result.UNKNOWN)
    if op.kind in (OpKind.INCR, OpKind.DECR):
        return r in (Result.NUMBER, Result.UNKNOWN)
    if op.kind is OpKind.INCR_INIT:
        return r in (Result.NUMBER, Result.UNKNOWN)
    if op.kind is OpKind.DELETE:
        return r in (Result.DELETED, Result.UNKNOWN)
    return False


def creates(op: Op) -> bool:
    """Could this op have created the key from missing?"""
    if op.kind is OpKind.SET:
        return True
    if op.kind is OpKind.ADD:
        return op.result in (Result.STORED, Result.UNKNOWN)
    if op.kind is OpKind.INCR_INIT:
        return op.result is Result.UNKNOWN or (
            op.result is Result.NUMBER and op.number == op.initial
        )
    return False


def sees_present(op: Op) -> bool:
    """Does this op's answer say the key existed when it ran?"""
    k, r = op.kind, op.result
    if k in (OpKind.GET, OpKind.GETS):
        return r is Result.HIT
    if k in (OpKind.INCR, OpKind.DECR):
        return r is Result.NUMBER
    if k is OpKind.INCR_INIT:
        return r is Result.NOT_STORED  # its add found the key
    if k is OpKind.TOUCH:
        return r is Result.TOUCHED
    if k is OpKind.CAS:
        return r in (Result.STORED, Result.EXISTS)
    if k in (OpKind.REPLACE, OpKind.APPEND, OpKind.PREPEND):
        return r is Result.STORED
    if k is OpKind.ADD:
        return r is Result.NOT_STORED
    return False


class Overlaps:
    """Could one of some ops be ordered inside a span: call <= hi and return >= lo (equal
    times read as concurrent, as the search reads them)."""

    def __init__(self, ops: Sequence[Op]) -> None:
        ordered = sorted(ops, key=lambda o: o.call_ns)
        self.calls = [o.call_ns for o in ordered]
        self.best: list[float] = []
        running = -INF
        for o in ordered:
            running = max(running, _ret(o))
            self.best.append(running)

    def any(self, lo: float, hi: float) -> bool:
        idx = bisect_right(self.calls, hi)
        return idx > 0 and self.best[idx - 1] >= lo


def _pair_span(a: Op, b: Op) -> tuple[float, float]:
    return min(a.call_ns, b.call_ns), max(_ret(a), _ret(b))


def lost_updates(ops: Sequence[Op], origin: int, may_vanish: bool) -> list[Witness]:
    """Two increments (or two decrements) answering the same number with nothing between
    that could have lowered (raised) the value again: one update was lost. Two incr-init
    both answering their initial value is the same thing at creation (double-create)."""
    ups: dict[int, list[Op]] = defaultdict(list)
    downs: dict[int, list[Op]] = defaultdict(list)
    total = 0
    for o in ops:
        if o.kind in (OpKind.INCR, OpKind.INCR_INIT) and (o.delta or 0) > 0:
            total += o.delta or 0
            if o.result is not Result.NUMBER or o.number is None:
                continue
            created = o.kind is OpKind.INCR_INIT and o.number == o.initial
            if created and may_vanish:
                continue
            ups[o.number].append(o)
        elif o.kind is OpKind.DECR and (o.delta or 0) > 0 and o.result is Result.NUMBER:
            if not o.number:  # decr clamps at 0: two zeros can both be right
                continue
            downs[o.number].append(o)
    if total >= 1 << 63:  # wrap-around possible: two equal answers can both be right
        ups.clear()

    def up_rescues(o: Op) -> bool:
        if not changes(o):
            return False
        if o.kind is OpKind.INCR and (o.delta or 0) > 0:
            return False
        if o.kind is OpKind.INCR_INIT and (o.delta or 0) > 0:
            return may_vanish and creates(o)
        return True

    def down_rescues(o: Op) -> bool:
        return changes(o) and not (o.kind is OpKind.DECR and (o.delta or 0) > 0)

    directions = ((ups, up_rescues, "increment"), (downs, down_rescues, "decrement"))
    for groups, rescues, word in directions:
        if not any(len(g) > 1 for g in groups.values()):
            continue
        index = Overlaps([o for o in ops if rescues(o)])
        for group in groups.values():
            group.sort(key=lambda o: o.call_ns)
            for a, b in pairwise(group):
                if index.any(*_pair_span(a, b)):
                    continue
                both_created = all(
                    o.kind is OpKind.INCR_INIT and o.number == o.initial for o in (a, b)
                )
                if both_created:
                    wrong = WrongClass.DOUBLE_CREATE
                    why = "both created the missing key; one creation was lost"
                else:
                    wrong = WrongClass.LOST_UPDATE
                    why = f"both cannot be right; one {word} was lost"
                sentence = f"{brief(a, origin)} and {brief(b, origin)}: {why}"
                return [make_witness(wrong, a.key, (a, b), sentence, origin)]
    return []


def lost_deletes(ops: Sequence[Op], origin: int) -> list[Witness]:
    """An op that saw the key present, called after a delete completed, with no op that
    could have created the key in between."""
    deletes = sorted(
        (o for o in ops if o.kind is OpKind.DELETE and o.return_ns is not None),
        key=lambda o: o.return_ns or 0,
    )
    if not deletes:
        return []
    returns = [o.return_ns or 0 for o in deletes]
    latest: list[Op] = []  # among deletes returned by then, the one called last
    for o in deletes:
        latest.append(o if not latest or o.call_ns > latest[-1].call_ns else latest[-1])
    creators = Overlaps([o for o in ops if creates(o)])
    for r in ops:
        if not sees_present(r):
            continue
        idx = bisect_left(returns, r.call_ns)
        if idx == 0:
            continue
        d = latest[idx - 1]
        if creators.any(d.call_ns, _ret(r)):
            continue
        gone = "deleted it" if d.result is Result.DELETED else "found it missing"
        sentence = (
            f"{brief(d, origin)} {gone} before {brief(r, origin)} began, and no store "
            "could have re-created the key in between: the delete was lost"
        )
        return [make_witness(WrongClass.LOST_DELETE, r.key, (d, r), sentence, origin)]
    return []


def _writes_value(o: Op) -> bool:
    return o.kind in _STORES and o.result in (Result.STORED, Result.UNKNOWN)


def _overwrites(o: Op) -> bool:
    """A completed op that surely replaced whatever value the key had."""
    if o.return_ns is None:
        return False
    if o.kind in (OpKind.SET, OpKind.ADD, OpKind.REPLACE, OpKind.CAS):
        return o.result is Result.STORED
    if o.kind in (OpKind.APPEND, OpKind.PREPEND):
        return o.result is Result.STORED and bool(o.value)
    return o.kind is OpKind.DELETE and o.result is Result.DELETED


def stale_reads(ops: Sequence[Op], origin: int) -> list[Witness]:
    """A read of a value whose only write was overwritten by a later write that completed
    before the read began (stale-read); or of a value nothing wrote (impossible-value)."""
    reads = [o for o in ops if o.kind in (OpKind.GET, OpKind.GETS) and o.result is Result.HIT]
    if not reads:
        return []
    concat = any(o.kind in (OpKind.APPEND, OpKind.PREPEND) for o in ops)
    counters = [o for o in ops if o.kind in (OpKind.INCR, OpKind.DECR, OpKind.INCR_INIT)]
    numbers = {o.number for o in counters if o.result is Result.NUMBER}
    numbers |= {o.initial for o in counters if o.kind is OpKind.INCR_INIT}
    any_number = any(o.result is Result.UNKNOWN for o in counters)
    writers: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        if _writes_value(o) and o.value is not None:
            writers[o.value.replace(" ", "")].append(o)
    later = sorted((o for o in ops if _overwrites(o)), key=lambda o: o.call_ns)
    later_calls = [o.call_ns for o in later]
    suffix: list[Op | None] = [None] * (len(later) + 1)  # the earliest-returning from i on
    for i in range(len(later) - 1, -1, -1):
        best = suffix[i + 1]
        o = later[i]
        suffix[i] = o if best is None or (o.return_ns or 0) < (best.return_ns or 0) else best
    for r in reads:
        v = (r.value or "").replace(" ", "")
        numeric = v.isdigit()
        ws = writers.get(v, [])
        explained = any(w.call_ns < _ret(r) for w in ws)
        if not explained and not concat and not (numeric and (any_number or int(v) in numbers)):
            sentence = f"{brief(r, origin)} read a value no operation wrote before it"
            return [make_witness(WrongClass.IMPOSSIBLE_VALUE, r.key, (r,), sentence, origin)]
        if len(ws) != 1 or (numeric and counters):
            continue
        w = ws[0]
        if w.return_ns is None:
            continue
        idx = bisect_right(later_calls, w.return_ns)
        o2 = suffix[idx]
        if o2 is None or o2 is w or (o2.return_ns or 0) >= r.call_ns:
            continue
        sentence = (
            f"{brief(r, origin)} read the value of {brief(w, origin)}, which "
            f"{brief(o2, origin)} replaced after it and before the read began: a stale read"
        )
        return [make_witness(WrongClass.STALE_READ, r.key, (w, o2, r), sentence, origin)]
    return []


def cas_changes(ops: Sequence[Op], origin: int) -> list[Witness]:
    """Two gets, one after the other, reading different cas tokens with no op between that
    could have written the key."""
    gets = sorted(
        (o for o in ops if o.kind is OpKind.GETS and o.result is Result.HIT and o.cas),
        key=lambda o: o.return_ns or 0,
    )
    if len(gets) < 2:
        return []
    returns = [o.return_ns or 0 for o in gets]
    latest: list[Op] = []
    for o in gets:
        latest.append(o if not latest or o.call_ns > latest[-1].call_ns else latest[-1])
    writers = Overlaps([o for o in ops if changes(o)])
    for g2 in gets:
        idx = bisect_left(returns, g2.call_ns)
        if idx == 0:
            continue
        g1 = latest[idx - 1]
        if g1.cas == g2.cas or writers.any(g1.call_ns, _ret(g2)):
            continue
        sentence = (
            f"{brief(g1, origin)} then {brief(g2, origin)}: the cas token changed with "
            "no write in between"
        )
        return [make_witness(WrongClass.CAS_CHANGED, g2.key, (g1, g2), sentence, origin)]
    return []


Rule = Callable[[Sequence[Op], int], list[Witness]]


def cheap_witnesses(ops: Sequence[Op], origin: int, *, may_vanish: bool) -> list[Witness]:
    """Every rule over one key's ops (at most one witness per rule; a witness whose ops an
    earlier one already shows is left out: a hit after a delete is a lost delete, not also a
    stale read)."""
    found = lost_updates(ops, origin, may_vanish)
    for rule in (lost_deletes, stale_reads, cas_changes):
        found += rule(ops, origin)
    kept: list[Witness] = []
    shown: set[tuple[str, float, str]] = set()
    for w in found:
        mine = {(o.client, o.call_s, o.kind) for o in w.ops}
        if mine & shown:
            continue
        shown |= mine
        kept.append(w)
    return kept
