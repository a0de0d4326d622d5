"""Correct histories by simulation: a linearizable memcached in a dict, clients whose ops
overlap at random, for the checker's tests and its benchmark.

Each client has one op outstanding at a time: called, applied to the dict at a random
point inside its interval (its linearization point), answered later. The answers are what
that order gives, so the history is linearizable by construction.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from verifier.check.history import Op, OpKind, Result

WRAP = 1 << 64
COUNTER_KINDS = (OpKind.INCR, OpKind.INCR, OpKind.DECR, OpKind.INCR_INIT, OpKind.GET, OpKind.DELETE)
WRITES_VALUE = (OpKind.SET, OpKind.ADD, OpKind.REPLACE, OpKind.APPEND, OpKind.PREPEND, OpKind.CAS)
REGISTER_KINDS = (
    OpKind.SET,
    OpKind.GET,
    OpKind.GETS,
    OpKind.GETS,
    OpKind.CAS,
    OpKind.ADD,
    OpKind.REPLACE,
    OpKind.DELETE,
    OpKind.TOUCH,
    OpKind.APPEND,
)


@dataclass
class Item:
    value: str
    cas: int


class Server:
    """memcached's answers for one op, from a dict (tokens from one global counter)."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.next_cas = 0

    def _token(self) -> int:
        self.next_cas += 1
        return self.next_cas

    def _store(self, key: str, value: str) -> None:
        self.items[key] = Item(value, self._token())

    def apply(self, op: Op) -> Op | None:
        """``op`` with its answer filled in; None for CLIENT_ERROR (never in histories)."""
        it = self.items.get(op.key)
        k = op.kind
        if k in (OpKind.GET, OpKind.GETS):
            if it is None:
                return _answer(op, Result.MISS, value=None, cas=None)
            return _answer(op, Result.HIT, value=it.value, cas=it.cas if k is OpKind.GETS else None)
        if k is OpKind.SET:
            self._store(op.key, op.value or "")
            return _answer(op, Result.STORED)
        if k is OpKind.ADD:
            if it is not None:
                return _answer(op, Result.NOT_STORED)
            self._store(op.key, op.value or "")
            return _answer(op, Result.STORED)
        if k in (OpKind.REPLACE, OpKind.APPEND, OpKind.PREPEND):
            if it is None:
                return _answer(op, Result.NOT_STORED)
            new = op.value or ""
            if k is OpKind.APPEND:
                new = it.value + new
            elif k is OpKind.PREPEND:
                new = new + it.value
            self._store(op.key, new)
            return _answer(op, Result.STORED)
        if k is OpKind.CAS:
            if it is None:
                return _answer(op, Result.NOT_FOUND)
            if it.cas != op.cas:
                return _answer(op, Result.EXISTS)
            self._store(op.key, op.value or "")
            return _answer(op, Result.STORED)
        if k in (OpKind.INCR, OpKind.DECR, OpKind.INCR_INIT):
            if it is None:
                if k is not OpKind.INCR_INIT:
                    return _answer(op, Result.NOT_FOUND)
                self._store(op.key, str(op.initial))
                return _answer(op, Result.NUMBER, number=op.initial)
            if not it.value.strip().isdigit():
                return None
            n = int(it.value)
            m = max(n - (op.delta or 0), 0) if k is OpKind.DECR else (n + (op.delta or 0)) % WRAP
            self._store(op.key, str(m))
            return _answer(op, Result.NUMBER, number=m)
        if k is OpKind.DELETE:
            if it is None:
                return _answer(op, Result.NOT_FOUND)
            del self.items[op.key]
            return _answer(op, Result.DELETED)
        if k is OpKind.TOUCH:
            return _answer(op, Result.NOT_FOUND if it is None else Result.TOUCHED)
        raise AssertionError(k)


def _answer(op: Op, result: Result, **fields: object) -> Op:
    data = op.to_json()
    data["result"] = str(result)
    for name, value in fields.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return Op.from_json(data)


def simulate(
    n_ops: int,
    n_keys: int,
    *,
    clients: int = 8,
    seed: int = 0,
    indeterminate: float = 0.0,
    latency_ns: int = 40_000,
    gap_ns: int = 20_000,
) -> list[Op]:
    """``n_ops`` linearizable ops over ``n_keys`` keys (half counters, half registers) by
    ``clients`` concurrent clients; a share ``indeterminate`` lose their reply."""
    rng = random.Random(seed)
    server = Server()
    keys = [f"{'c' if i % 2 else 'r'}:{i}" for i in range(n_keys)]
    last_token: dict[tuple[int, str], int] = {}
    heap: list[tuple[int, int, int]] = []  # (linearization time, client, call time)
    for c in range(clients):
        call = rng.randrange(gap_ns)
        heapq.heappush(heap, (call + rng.randrange(latency_ns), c, call))
    ops: list[Op] = []
    seq = 0
    while len(ops) < n_ops:
        lin, c, call = heapq.heappop(heap)
        ret = lin + rng.randrange(1, latency_ns)
        key = rng.choice(keys)
        seq += 1
        client = f"p0.sim.{c}"
        kind = rng.choice(COUNTER_KINDS if key.startswith("c") else REGISTER_KINDS)
        token = last_token.get((c, key), 0)
        op = Op(
            client=client,
            key=key,
            kind=kind,
            call_ns=call,
            return_ns=ret,
            result=Result.UNKNOWN,
            value=f"{c}:{seq}" if kind in WRITES_VALUE else None,
            cas=(token or rng.randrange(1, 1 << 20)) if kind is OpKind.CAS else None,
            delta=rng.choice((1, 1, 2, 5))
            if kind in (OpKind.INCR, OpKind.DECR, OpKind.INCR_INIT)
            else None,
            initial=rng.randrange(0, 100) if kind is OpKind.INCR_INIT else None,
        )
        answered = server.apply(op)
        if answered is not None:
            if kind is OpKind.GETS and answered.cas:
                last_token[(c, key)] = answered.cas
            if rng.random() < indeterminate:
                answered = _answer(
                    answered, Result.UNKNOWN, return_ns=None, number=None, cas=op.cas
                )
                if kind in (OpKind.GET, OpKind.GETS):
                    answered = _answer(answered, Result.UNKNOWN, value=None)
            ops.append(answered)
        next_call = ret + rng.randrange(gap_ns)
        heapq.heappush(heap, (next_call + rng.randrange(latency_ns), c, next_call))
    return ops
