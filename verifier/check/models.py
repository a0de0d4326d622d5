"""memcached's semantics for one key, as a Porcupine-style model: ``init``, ``step``, describe.

A key's state is a tuple ``(value, token, floor)``:

- ``value``: the stored string, or None when the key is missing;
- ``token``: the cas token, 0 while *unbound* (every write gives the key a fresh token that
  nobody knows until a ``gets`` reads it; the first read after a write binds it);
- ``floor``: the largest token known to exist before this point. memcached draws every
  token from one global counter (``get_cas_id()``, +1 per write), so a fresh token is always
  above every earlier one: a ``gets`` that binds a token at or below ``floor``, or reads a
  bound token changed with no write between, is a violation (class cas-changed).

``step(state, op)`` returns the tuple of states the op can lead to given its answer: empty
means the answer is impossible in that state (Porcupine's ``ok == False``). It is a tuple,
not one state, because an indeterminate op (no reply) may or may not have taken effect and
because, with ``may_vanish``, a key may disappear (eviction, expiry, flush_all) just before
any op. Indeterminate ops take effect at any point after their call or never (Porcupine's
and Knossos's "info" semantics): the search gives them an infinite return time, and being
linearized last is the same as never taking effect.

Under ``may_vanish`` the model adds a spontaneous delete before every op: answers that need
a *missing* key (MISS, NOT_FOUND, add STORED) are always explainable, while answers that
need a *present* value still need a write that produced it. So what stays sound is: a value
read that no live write explains (stale-read, impossible-value, lost-delete: a hit after a
delete needs a store), two increments answering the same number (lost-update), and a cas
token that changed with no write (cas-changed). What is lost: a MISS where the key should
exist, and double-create (a vanish between two creations makes both right).

Numbers: memcached's incr wraps at 2^64, decr clamps at 0. An incr/decr done in place pads
a shorter number with spaces (``"100"`` -> ``"99 "``), but only when no other connection
holds the item (``refcount == 2`` in ``do_add_delta``), else it makes a new unpadded item:
the padding is not determined by the history, so values compare with spaces removed (an
append after a decr reads ``"99 x"`` or ``"99x"``). Workload values carry no spaces.
"""

from __future__ import annotations

from collections.abc import Callable

from verifier.check.history import Op, OpKind, Result

# ops and results as small ints: the search calls step() once per candidate
GET, GETS, SET, ADD, REPLACE, APPEND, PREPEND, CAS, INCR, DECR, INCR_INIT, DELETE, TOUCH = range(13)
KIND_CODE: dict[OpKind, int] = {
    OpKind.GET: GET,
    OpKind.GETS: GETS,
    OpKind.SET: SET,
    OpKind.ADD: ADD,
    OpKind.REPLACE: REPLACE,
    OpKind.APPEND: APPEND,
    OpKind.PREPEND: PREPEND,
    OpKind.CAS: CAS,
    OpKind.INCR: INCR,
    OpKind.DECR: DECR,
    OpKind.INCR_INIT: INCR_INIT,
    OpKind.DELETE: DELETE,
    OpKind.TOUCH: TOUCH,
}
(R_HIT, R_MISS, R_STORED, R_NOT_STORED, R_EXISTS, R_NOT_FOUND, R_DELETED, R_TOUCHED) = range(8)
R_NUMBER, R_UNKNOWN = 8, 9
RESULT_CODE: dict[Result, int] = {
    Result.HIT: R_HIT,
    Result.MISS: R_MISS,
    Result.STORED: R_STORED,
    Result.NOT_STORED: R_NOT_STORED,
    Result.EXISTS: R_EXISTS,
    Result.NOT_FOUND: R_NOT_FOUND,
    Result.DELETED: R_DELETED,
    Result.TOUCHED: R_TOUCHED,
    Result.NUMBER: R_NUMBER,
    Result.UNKNOWN: R_UNKNOWN,
}
# the answers each op can give (besides UNKNOWN); anything else is bad input
ALLOWED: dict[OpKind, frozenset[Result]] = {
    OpKind.GET: frozenset({Result.HIT, Result.MISS}),
    OpKind.GETS: frozenset({Result.HIT, Result.MISS}),
    OpKind.SET: frozenset({Result.STORED}),
    OpKind.ADD: frozenset({Result.STORED, Result.NOT_STORED}),
    OpKind.REPLACE: frozenset({Result.STORED, Result.NOT_STORED}),
    OpKind.APPEND: frozenset({Result.STORED, Result.NOT_STORED}),
    OpKind.PREPEND: frozenset({Result.STORED, Result.NOT_STORED}),
    OpKind.CAS: frozenset({Result.STORED, Result.EXISTS, Result.NOT_FOUND}),
    OpKind.INCR: frozenset({Result.NUMBER, Result.NOT_FOUND}),
    OpKind.DECR: frozenset({Result.NUMBER, Result.NOT_FOUND}),
    # NOT_STORED: 1.4.6 on (ea2d42a50): the key was missing, then its add lost to another's
    OpKind.INCR_INIT: frozenset({Result.NUMBER, Result.NOT_STORED}),
    OpKind.DELETE: frozenset({Result.DELETED, Result.NOT_FOUND}),
    OpKind.TOUCH: frozenset({Result.TOUCHED, Result.NOT_FOUND}),
}
WRAP = 1 << 64

State = tuple[str | None, int, int]
Encoded = tuple[int, int, str | None, int, int, int, int]
INIT: State = (None, 0, 0)


def encode(op: Op) -> Encoded:
    """The op as the ints and strings ``step`` reads (missing fields as "" or 0)."""
    return (
        KIND_CODE[op.kind],
        RESULT_CODE[op.result],
        op.value,
        op.cas or 0,
        op.delta or 0,
        op.initial or 0,
        op.number if op.number is not None else -1,
    )


def _number(value: str) -> int | None:
    text = value.rstrip(" ")
    if not text.isdigit() or len(text) > 20:
        return None
    n = int(text)
    return n if n < WRAP else None


def _same(read: str | None, stored: str) -> bool:
    """Is ``read`` the stored value, up to the spaces an in-place incr/decr pads with?"""
    if read == stored:
        return True
    return read is not None and read.replace(" ", "") == stored.replace(" ", "")


def _apply(s: State, op: Encoded) -> tuple[State, ...]:
    """Next states from ``s`` with no vanish; () if the answer is impossible."""
    kind, res, value, cas, delta, initial, number = op
    val, tok, floor = s
    present = val is not None
    unknown = res == R_UNKNOWN
    if kind == GET:
        if unknown or (res == R_HIT and present and _same(value, val)):  # type: ignore[arg-type]
            return (s,)
        return (s,) if res == R_MISS and not present else ()
    if kind == GETS:
        if unknown or (res == R_MISS and not present):
            return (s,)
        if res != R_HIT or not present or not _same(value, val):  # type: ignore[arg-type]
            return ()
        if not cas:  # memcached -C: every token reads 0, nothing to bind
            return (s,)
        if tok:
            return (s,) if cas == tok else ()
        return ((val, cas, cas),) if cas > floor else ()
    if kind in (SET, ADD, REPLACE, APPEND, PREPEND):
        if kind == SET:
            stores = True
        elif kind == ADD:
            stores = not present
        else:
            stores = present
        if unknown:
            pass
        elif (res == R_STORED) != stores:
            return ()
        if not stores:
            return (s,)
        if kind == APPEND:
            new = val + value  # type: ignore[operator]
        elif kind == PREPEND:
            new = value + val  # type: ignore[operator]
        else:
            new = value
        return ((new, 0, floor),)
    if kind == CAS:
        if not present:
            return (s,) if unknown or res == R_NOT_FOUND else ()
        stored = ((value, 0, max(floor, cas)),)
        if tok:
            outcome = stored if cas == tok else (s,)
            if unknown:
                return outcome
            return outcome if (res == R_STORED) == (cas == tok) and res != R_NOT_FOUND else ()
        # unbound: the current token is some fresh one above floor
        if res == R_STORED:
            return stored if cas > floor else ()
        if res == R_EXISTS:
            return (s,)
        if unknown:
            return (*stored, s) if cas > floor else (s,)
        return ()
    if kind in (INCR, DECR, INCR_INIT):
        if kind == INCR_INIT and res == R_NOT_STORED:  # its add found the key there
            return (s,) if present else ()
        if not present:
            if kind == INCR_INIT:
                if unknown or number == initial:
                    return ((str(initial), 0, floor),)
                return ()
            return (s,) if unknown or res == R_NOT_FOUND else ()
        n = _number(val)  # type: ignore[arg-type]
        if n is None:  # CLIENT_ERROR: such ops are not in histories; a no-op if indeterminate
            return (s,) if unknown else ()
        m = max(n - delta, 0) if kind == DECR else (n + delta) % WRAP
        if unknown and kind == INCR_INIT:  # added to, or its add lost (NOT_STORED)
            return ((str(m), 0, floor), s)
        if unknown or (res == R_NUMBER and number == m):
            return ((str(m), 0, floor),)
        return ()
    if kind == DELETE:
        if unknown or (res == R_DELETED and present):
            return ((None, 0, floor),)
        return (s,) if res == R_NOT_FOUND and not present else ()
    if kind == TOUCH:
        if unknown:
            return (s,)
        return (s,) if (res == R_TOUCHED) == present else ()
    raise AssertionError(f"unknown op kind {kind}")


def is_pure(op: Encoded) -> bool:
    """An op that leaves the state unchanged in every state where its answer is possible:
    reads, touch, and answers that say nothing was done (NOT_STORED, EXISTS, NOT_FOUND). A
    gets may bind a token, but only the token the key holds (see the search's use)."""
    kind, res = op[0], op[1]
    if kind in (GET, GETS, TOUCH):
        return True
    if kind in (ADD, REPLACE, APPEND, PREPEND):
        return res == R_NOT_STORED
    if kind == CAS:
        return res in (R_EXISTS, R_NOT_FOUND)
    if kind in (INCR, DECR, DELETE):
        return res == R_NOT_FOUND
    if kind == INCR_INIT:
        return res == R_NOT_STORED
    return False


class MemcachedKey:
    """One key of memcached: register, counter and cas register at once (the op decides)."""

    def __init__(self, *, may_vanish: bool = False) -> None:
        self.may_vanish = may_vanish

    def init(self) -> State:
        return INIT

    def step_function(self) -> Callable[[State, Encoded], tuple[State, ...]]:
        """``step`` itself, or without vanish the plain rules (one call less per step)."""
        return self.step if self.may_vanish else _apply

    def step(self, state: State, op: Encoded) -> tuple[State, ...]:
        """States ``op`` can lead to from ``state`` given its answer; () if none."""
        if not self.may_vanish or state[0] is None:
            return _apply(state, op)
        kept = _apply(state, op)
        vanished = _apply((None, 0, state[2]), op)
        if not vanished:
            return kept
        if not kept:
            return vanished
        return tuple(dict.fromkeys(kept + vanished))

    @staticmethod
    def describe_state(state: State) -> str:
        val, tok, _floor = state
        if val is None:
            return "missing"
        token = f", cas {tok}" if tok else ""
        shown = val if len(val) <= 40 else val[:37] + "..."
        return f"{shown!r}{token}"
