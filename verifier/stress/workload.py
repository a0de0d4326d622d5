"""The memcached text-protocol requests the flood sends, and how their replies end.

Requests are pre-built once per process into a shuffled schedule (no per-op formatting
or random draws on the hot path); each coroutine walks it from its own offset.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from verifier.stress.stats import Field

SCHEDULE_LEN = 4096

# Outcome of a reply: the counter to bump. OK means "one more op".
OK = int(Field.OPS)
MAXCONNS = int(Field.ERR_MAXCONNS)
SERVER_ERROR = int(Field.ERR_SERVER)

_ERROR_PREFIXES = (b"ERROR", b"SERVER_ERROR", b"CLIENT_ERROR")
_MAXCONNS_TEXT = b"Too many open connections"

Request = tuple[bytes, bool]  # (wire bytes, reply ends with "END\r\n" rather than one line)


def build_request(command: str, key: int, value_size: int) -> Request:
    if command == "get":
        return b"get vk:%d\r\n" % key, True
    if command == "set":
        return b"set vk:%d 0 0 %d\r\n%s\r\n" % (key, value_size, b"x" * value_size), False
    if command == "stats":
        return b"stats\r\n", True
    raise ValueError(f"unknown command {command!r}")


def build_schedule(
    mix: Sequence[tuple[str, float]],
    *,
    key_space: int,
    value_size: int,
    rng: random.Random,
    length: int = SCHEDULE_LEN,
) -> list[Request]:
    """``length`` requests drawn from ``mix`` (weights need not sum to 1) over random keys."""
    commands = [command for command, _ in mix]
    weights = [weight for _, weight in mix]
    picks = rng.choices(commands, weights=weights, k=length)
    return [build_request(c, rng.randrange(key_space), value_size) for c in picks]


def classify_reply(buf: bytes, multi_line: bool) -> int | None:
    """The outcome (OK, MAXCONNS, SERVER_ERROR) once ``buf`` holds a whole reply, else None.

    An error line ends any command. memcached's maxconns_fast path sends
    "ERROR Too many open connections\\r\\n" right after accept, before reading anything.
    """
    if buf.startswith(_ERROR_PREFIXES):
        if b"\r\n" not in buf:
            return None
        return MAXCONNS if _MAXCONNS_TEXT in buf else SERVER_ERROR
    if multi_line:  # get (VALUE ... END or END), stats (STAT ... END)
        return OK if buf.endswith(b"\r\nEND\r\n") or buf == b"END\r\n" else None
    return OK if buf.endswith(b"\r\n") else None  # set: STORED / NOT_STORED / ...
