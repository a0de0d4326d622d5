"""Stretch points: where auto may sleep a thread, keyed by names that survive a rebuild.

Three kinds, one rule each (``Point.rule``):

- ``store``: right after a store to a shared variable by the kind of thread that writes
  it (a watch rule, ``cond=any``; ``main``: the thread that loads the library, the
  listener in memcached; ``any``: every thread, ``thread=all``);
- ``call``: right after a wrapped libc call fails with one errno (an interpose rule);
- ``lock``: right after a contended acquisition of one mutex (a lock rule), named by
  its symbol, or by the function that locks it when it lives on the heap.

The key (``store:allow_new_conns@main``, ``call:accept|accept4:EMFILE@main``,
``lock:conn_lock@any``) holds no address, so a credit earned at one commit of a bisect
applies at the next one. ``accept`` and ``accept4`` are one family (1.4.6 calls accept,
1.6 accept4), stretched together.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from verifier.amplify.auto.symbols import DataSymbol, watch_span
from verifier.amplify.spec import InterposeRule, LockRule, Rule, WatchRule

FAMILIES: dict[str, tuple[str, ...]] = {
    "accept": ("accept", "accept4"),
    "accept4": ("accept", "accept4"),
}


class PointKind(enum.StrEnum):
    STORE = "store"
    CALL = "call"
    LOCK = "lock"


class ThreadKind(enum.StrEnum):
    MAIN = "main"  # the thread that loaded the library (memcached's listener)
    ANY = "any"


def family(function: str) -> tuple[str, ...]:
    return FAMILIES.get(function, (function,))


@dataclass(frozen=True)
class Point:
    """One place to stretch in one binary (offsets are this binary's)."""

    kind: PointKind
    name: str  # variable key / "fn|fn:ERRNO" / mutex key or "site:FUNCTION"
    thread: ThreadKind
    rate: float  # hits per second in the unstretched discovery flood (0: unknown)
    where: str = ""  # a code location seen in discovery, "memcached.c:2552 (fn)"
    symbol: str = ""  # store/lock: the nm name (for the rule's label)
    symoff: int | None = None  # store: watched address; lock: start of the mutex range
    length: int = 1  # store: bytes watched (1/2/4/8); lock: range length
    functions: tuple[str, ...] = ()  # call
    errno_name: str | None = None  # call
    site: int | None = None  # lock on the heap: call site offset in the executable

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}@{self.thread}"

    def rule(self, delay_us: int) -> Rule:
        """The amplifier rule that stretches this point by ``delay_us``."""
        label = self.symbol.replace(":", "_") or "auto"
        if self.kind is PointKind.STORE:
            thread = "main" if self.thread is ThreadKind.MAIN else "all"
            return WatchRule(
                label,
                symoff=self.symoff,
                length=self.length,
                cond="any",
                delay_us=delay_us,
                thread=thread,
            )
        if self.kind is PointKind.CALL:
            return InterposeRule(
                self.functions,
                ret=-1,
                errno_name=self.errno_name,
                delay_us=delay_us,
                thread=self.thread.value,
            )
        return LockRule(
            label if self.symoff is not None else "heap",
            symoff=self.symoff,
            length=self.length,
            site=self.site,
            delay_us=delay_us,
            thread=self.thread.value,
        )

    def rebased(self, symbols: Sequence[DataSymbol]) -> Point | None:
        """The same point in another build of the program (its objects by their stable
        keys); None when it cannot be placed there (the object is gone, or a heap mutex
        known only by a call site's offset)."""
        if self.kind is PointKind.CALL:
            return self
        if self.site is not None and self.symoff is None:
            return None
        found = next((sym for sym in symbols if sym.key == self.name.split("+")[0]), None)
        if found is None:
            return None
        if self.kind is PointKind.STORE:
            symoff, length = watch_span(found.offset, found.size)
            return replace(self, symoff=symoff, length=length, symbol=found.name)
        return replace(self, symoff=found.offset, length=found.size, symbol=found.name)

    def describe(self) -> str:
        who = "the main thread" if self.thread is ThreadKind.MAIN else "any thread"
        if self.kind is PointKind.STORE:
            return f"store to {self.name} by {who}"
        if self.kind is PointKind.CALL:
            functions, _, err = self.name.rpartition(":")
            return f"{functions.replace('|', '/')} failing with {err} on {who}"
        return f"contended lock of {self.name} on {who}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "name": self.name,
            "thread": self.thread.value,
            "rate": self.rate,
            "where": self.where,
            "symbol": self.symbol,
            "symoff": self.symoff,
            "length": self.length,
            "functions": list(self.functions),
            "errno": self.errno_name,
            "site": self.site,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Point:
        return cls(
            kind=PointKind(data["kind"]),
            name=str(data["name"]),
            thread=ThreadKind(data["thread"]),
            rate=float(data.get("rate", 0.0)),
            where=str(data.get("where", "")),
            symbol=str(data.get("symbol", "")),
            symoff=data.get("symoff"),
            length=int(data.get("length", 1)),
            functions=tuple(data.get("functions", ())),
            errno_name=data.get("errno"),
            site=data.get("site"),
        )
