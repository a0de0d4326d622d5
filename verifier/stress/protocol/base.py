"""The shape every codec shares: what a client asks (``Command``), what comes back
(``Reply``), and the ``Codec`` protocol (encode, then parse incrementally).

One ``Command`` gives exactly one ``Reply``. A quiet batch (binary getkq/setq, meta ``q``)
is one command whose codec closes it with a noop (``mn``) and whose parse consumes
everything up to the noop's answer, so pipelining never has to match replies by opaque.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class Status(enum.StrEnum):
    """How a reply ended, across protocols (binary and meta status codes map onto these)."""

    HIT = "hit"  # a get found the key (value, cas set); a multi-get with >= 1 value
    MISS = "miss"  # a get found nothing (END, NOT_FOUND, EN)
    STORED = "stored"
    NOT_STORED = "not-stored"  # add on an existing key, replace/append on a missing one
    EXISTS = "exists"  # cas with a stale token
    NOT_FOUND = "not-found"  # cas/incr/decr/delete/touch on a missing key
    DELETED = "deleted"
    TOUCHED = "touched"
    NUMBER = "number"  # incr/decr: the new value in ``number``
    OK = "ok"  # flush_all, verbosity, slabs reassign, lru_crawler, watch, noop, mn
    STATS = "stats"  # STAT lines in ``stats``
    BUSY = "busy"  # "BUSY ..." (slabs reassign, lru_crawler): the server is busy, not wrong
    ERROR = "error"  # ERROR: the server does not know the command
    CLIENT_ERROR = "client-error"
    SERVER_ERROR = "server-error"  # SERVER_ERROR, binary status 0x82..0x86
    OTHER = "other"  # an answer the codec knows is well-formed but not one of the above


ERRORS = frozenset({Status.ERROR, Status.CLIENT_ERROR, Status.SERVER_ERROR})


@dataclass(frozen=True, slots=True)
class Command:
    """One request a client sends. ``name`` is the workload file's command name (e.g.
    "get", "mget", "incr", "bin_getkq", "mg"); the codec knows which it speaks."""

    name: str
    key: bytes = b""
    keys: tuple[bytes, ...] = ()  # multi-get and quiet batches: every key, in order
    value: bytes = b""
    flags: int = 0
    exptime: int = 0
    delta: int = 1  # incr/decr
    initial: int | None = None  # binary incr/decr (and meta ma N/J): create with this value
    cas: int = 0  # cas: the token; 0 elsewhere
    noreply: bool = False  # ascii noreply: the codec sends a trailing mn/noop to close it
    arg: str = ""  # free text for admin commands ("31 5" for slabs reassign, "1" for crawl)


@dataclass(slots=True)
class Reply:
    status: Status
    value: bytes | None = None  # a single get's value
    cas: int | None = None  # its cas token (gets, gats, binary get, meta c flag)
    number: int | None = None  # incr/decr result
    values: list[tuple[bytes, bytes, int | None]] = field(default_factory=list)  # mget
    stats: dict[str, str] = field(default_factory=dict)  # STAT name value
    text: str = ""  # the error line, or the raw first line of an OTHER reply
    ttl: int | None = None  # meta mg ``t``: seconds left, -1 for none


class ProtocolError(Exception):
    """The bytes received cannot be a reply to the command sent (a desynchronised
    stream): the connection must be dropped, and the op counted as an error."""


class Codec(Protocol):
    protocol: str  # "ascii", "binary" or "meta"
    commands: frozenset[str]  # command names this codec encodes

    def encode(self, command: Command) -> bytes:
        """The wire bytes of ``command`` (ValueError for a name it does not speak)."""
        ...

    def parse(self, command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
        """The reply to ``command`` beginning at ``buf[start:]``, and the offset after
        it; ``(None, start)`` while it is incomplete. ProtocolError if it cannot be."""
        ...

    def eof_reply(self, command: Command) -> Reply | None:
        """The reply when the server closes the stream instead of answering (ascii
        ``shutdown`` obeyed); None when the end of stream is an error."""
        ...
