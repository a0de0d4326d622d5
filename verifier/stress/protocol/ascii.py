"""memcached's text protocol as a codec.

Command names (the workload file's vocabulary) and what each sends:

- ``get``, ``gets`` (``key``); ``mget``, ``mgets`` (``keys``, repeats allowed: one
  ``get k1 k2 k1``); ``gat``, ``gats`` (``exptime``, ``key``).
- ``set``, ``add``, ``replace``, ``append``, ``prepend`` (``key``, ``value``, ``flags``,
  ``exptime``); ``cas`` (the same and ``cas``, a token from the client's own ``gets``).
- ``incr``, ``decr`` (``delta``); ``delete``; ``touch`` (``exptime``).
- ``flush_all`` (``arg`` "" or a delay), ``verbosity`` (``arg`` a level), ``stats`` (``arg``
  "" | items | slabs | sizes | conns | settings | detail on|off|dump), ``version``.
- ``slabs_reassign`` (``arg`` "SRC DST"), ``slabs_automove`` (``arg`` 0|1|2),
  ``lru_crawler_crawl`` (``arg`` "all" or a class list), ``lru_crawler_metadump`` (``arg``
  "all"; the dump lands in ``value``, its line count in ``number``),
  ``lru_crawler_enable``, ``lru_crawler_disable``.
- ``watch`` (``arg`` e.g. "fetchers mutations"): only the ``OK`` is parsed; the log stream
  that follows is the caller's to read.
- ``shutdown`` (``arg`` "" | graceful): a server that obeys closes the connection without a
  word, so ``eof_reply`` gives the answer when the stream ends.
- ``debugtime`` (``arg`` seconds): only in builds with MEMCACHED_DEBUG (1.6.18 has no
  ``debugitem``; ``debugtime`` is its only debug command).

``noreply`` (storage, incr/decr, delete, touch, flush_all, verbosity) appends a closer,
``mn`` by default (builds with 1.6.10+ meta: ``features.has("meta")``; 1.5.19 answers it
EN) or ``version`` (``AsciiCodec(closer="version")``, every release),
and the reply is that closer's answer: OK, or the first error line met before it.

Measured (``benchmarks/protocol_codecs.py --runs 5``, encode + parse from a buffer of 64 pipelined
replies, best of 5, on this 2-core box at load average 15-19 from other jobs: figures are a
floor): get hit of 32 bytes 96 k ops/s, set 144 k, incr 173 k; at load 8-10, best of 15:
198 k, 324 k, 502 k.
Single-line replies are one ``find(b"\\r\\n")`` and one dict lookup;
VALUE blocks are taken by their byte count, never scanned.
"""

from __future__ import annotations

from collections.abc import Callable

from verifier.stress.protocol.base import Command, ProtocolError, Reply, Status

_CRLF = b"\r\n"
_MAX_LINE = 8192  # no single-line answer of memcached is longer: beyond it, a desync

_LINE_STATUS: dict[bytes, Status] = {
    b"STORED": Status.STORED,
    b"NOT_STORED": Status.NOT_STORED,
    b"EXISTS": Status.EXISTS,
    b"NOT_FOUND": Status.NOT_FOUND,
    b"DELETED": Status.DELETED,
    b"TOUCHED": Status.TOUCHED,
    b"OK": Status.OK,
    b"END": Status.MISS,
    b"ERROR": Status.ERROR,
    b"MN": Status.OK,
}
# single-line replies, made once: the hot path hands out fresh Replies (they are mutable)
_PREFIX_STATUS: tuple[tuple[bytes, Status], ...] = (
    (b"CLIENT_ERROR", Status.CLIENT_ERROR),
    (b"SERVER_ERROR", Status.SERVER_ERROR),
    (b"ERROR", Status.ERROR),
    (b"BUSY", Status.BUSY),
    (b"VERSION ", Status.OK),
)

STORAGE = frozenset({"set", "add", "replace", "append", "prepend", "cas"})
RETRIEVAL = frozenset({"get", "gets", "mget", "mgets", "gat", "gats"})
NOREPLY_OK = STORAGE | {"incr", "decr", "delete", "touch", "flush_all", "verbosity"}
_CLOSERS = {"mn": (b"mn\r\n", b"MN"), "version": (b"version\r\n", b"VERSION ")}


def _line_reply(line: bytes) -> Reply:
    """A one-line answer: a known word, an error, BUSY, VERSION, or OTHER (text kept)."""
    status = _LINE_STATUS.get(line)
    if status is not None:
        return Reply(status, text=line.decode("latin-1") if status is Status.ERROR else "")
    if line.startswith((b"VALUE ", b"STAT ")):
        raise ProtocolError(f"data line where a one-line answer was due: {line[:60]!r}")
    for prefix, status in _PREFIX_STATUS:
        if line.startswith(prefix):
            return Reply(status, text=line.decode("latin-1"))
    return Reply(Status.OTHER, text=line.decode("latin-1"))


def _no_line(buf: bytes, start: int) -> tuple[None, int]:
    if len(buf) - start > _MAX_LINE:
        raise ProtocolError(f"no end of line within {_MAX_LINE} bytes: {buf[start : start + 60]!r}")
    return None, start


def parse_single(command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
    eol = buf.find(_CRLF, start)
    if eol < 0:
        return _no_line(buf, start)
    return _line_reply(buf[start:eol]), eol + 2


def parse_number(command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
    eol = buf.find(_CRLF, start)
    if eol < 0:
        return _no_line(buf, start)
    line = buf[start:eol]
    if line.isdigit():
        return Reply(Status.NUMBER, number=int(line)), eol + 2
    return _line_reply(line), eol + 2


def parse_retrieval(command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
    """VALUE blocks (exact by their byte counts) until END; an error line ends it too."""
    values: list[tuple[bytes, bytes, int | None]] = []
    pos = start
    while True:
        if buf.startswith(b"END\r\n", pos):
            if not values:
                return Reply(Status.MISS), pos + 5
            _, value, cas = values[0]
            return Reply(Status.HIT, value=value, cas=cas, values=values), pos + 5
        eol = buf.find(_CRLF, pos)
        if eol < 0:
            return _no_line(buf, pos) if not values else (None, start)
        if buf.startswith(b"VALUE ", pos):
            parts = buf[pos + 6 : eol].split()
            try:
                end = eol + 2 + int(parts[2])
                cas = int(parts[3]) if len(parts) > 3 else None
            except (IndexError, ValueError):
                raise ProtocolError(f"bad VALUE line {buf[pos:eol][:80]!r}") from None
            if len(buf) < end + 2:
                return None, start
            if buf[end : end + 2] != _CRLF:
                raise ProtocolError(f"VALUE block of {parts[2]!r} bytes not closed by CRLF")
            values.append((parts[0], buf[eol + 2 : end], cas))
            pos = end + 2
            continue
        line = buf[pos:eol]
        if values:
            raise ProtocolError(f"{line[:60]!r} inside a multi-get answer")
        return _line_reply(line), eol + 2


def parse_stats(command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
    """STAT (or PREFIX, from ``stats detail dump``) lines until END; or one other line."""
    stats: dict[str, str] = {}
    pos = start
    while True:
        eol = buf.find(_CRLF, pos)
        if eol < 0:
            return _no_line(buf, pos) if pos == start else (None, start)
        line = buf[pos:eol]
        if line == b"END":
            return Reply(Status.STATS, stats=stats), eol + 2
        if line.startswith((b"STAT ", b"PREFIX ")):
            name, _, value = line.decode("latin-1").partition(" ")[2].partition(" ")
            stats[name] = value
        elif pos == start:
            return _line_reply(line), eol + 2
        else:
            raise ProtocolError(f"{line[:60]!r} inside a stats answer")
        pos = eol + 2


def parse_metadump(command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
    """``key=...\\n`` lines (LF only, crawler.c) closed by ``END\\r\\n``; or one line
    (BUSY, ERROR metadump not allowed ...)."""
    if len(buf) - start < 4:
        return None, start
    if buf.startswith(b"END\r\n", start):
        return Reply(Status.OK, value=b"", number=0), start + 5
    if not buf.startswith(b"key=", start):
        return parse_single(command, buf, start)
    end = buf.find(b"\nEND\r\n", start)
    if end < 0:
        return None, start
    body = buf[start : end + 1]
    return Reply(Status.OK, value=body, number=body.count(b"\n")), end + 6


def _closed_noreply(closer: bytes) -> Callable[[Command, bytes, int], tuple[Reply | None, int]]:
    def parse(command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
        """Lines until the closer's answer: OK, or the first error line before it."""
        pos = start
        first: Reply | None = None
        while True:
            eol = buf.find(_CRLF, pos)
            if eol < 0:
                return _no_line(buf, pos) if pos == start else (None, start)
            line = buf[pos:eol]
            pos = eol + 2
            if line.startswith(closer):
                return first or Reply(Status.OK, text="noreply"), pos
            if first is None:
                first = _line_reply(line)

    return parse


def _storage(verb: bytes) -> Callable[[Command, bytes], bytes]:
    def encode(c: Command, tail: bytes) -> bytes:
        return b"%b %b %d %d %d%b\r\n%b\r\n" % (
            verb,
            c.key,
            c.flags,
            c.exptime,
            len(c.value),
            tail,
            c.value,
        )

    return encode


def _encode_cas(c: Command, tail: bytes) -> bytes:
    return b"cas %b %d %d %d %d%b\r\n%b\r\n" % (
        c.key,
        c.flags,
        c.exptime,
        len(c.value),
        c.cas,
        tail,
        c.value,
    )


def _arg(c: Command) -> bytes:
    return (" " + c.arg).encode() if c.arg else b""


_ENCODERS: dict[str, Callable[[Command, bytes], bytes]] = {
    "get": lambda c, t: b"get " + c.key + _CRLF,
    "gets": lambda c, t: b"gets " + c.key + _CRLF,
    "mget": lambda c, t: b"get " + b" ".join(c.keys) + _CRLF,
    "mgets": lambda c, t: b"gets " + b" ".join(c.keys) + _CRLF,
    "gat": lambda c, t: b"gat %d %b\r\n" % (c.exptime, c.key),
    "gats": lambda c, t: b"gats %d %b\r\n" % (c.exptime, c.key),
    **{verb: _storage(verb.encode()) for verb in ("set", "add", "replace", "append", "prepend")},
    "cas": _encode_cas,
    "incr": lambda c, t: b"incr %b %d%b\r\n" % (c.key, c.delta, t),
    "decr": lambda c, t: b"decr %b %d%b\r\n" % (c.key, c.delta, t),
    "delete": lambda c, t: b"delete " + c.key + t + _CRLF,
    "touch": lambda c, t: b"touch %b %d%b\r\n" % (c.key, c.exptime, t),
    "flush_all": lambda c, t: b"flush_all" + _arg(c) + t + _CRLF,
    "verbosity": lambda c, t: b"verbosity" + _arg(c) + t + _CRLF,
    "stats": lambda c, t: b"stats" + _arg(c) + _CRLF,
    "version": lambda c, t: b"version\r\n",
    "slabs_reassign": lambda c, t: b"slabs reassign" + _arg(c) + _CRLF,
    "slabs_automove": lambda c, t: b"slabs automove" + _arg(c) + _CRLF,
    "lru_crawler_crawl": lambda c, t: b"lru_crawler crawl" + _arg(c) + _CRLF,
    "lru_crawler_metadump": lambda c, t: b"lru_crawler metadump" + _arg(c) + _CRLF,
    "lru_crawler_enable": lambda c, t: b"lru_crawler enable\r\n",
    "lru_crawler_disable": lambda c, t: b"lru_crawler disable\r\n",
    "watch": lambda c, t: b"watch" + _arg(c) + _CRLF,
    "shutdown": lambda c, t: b"shutdown" + _arg(c) + _CRLF,
    "debugtime": lambda c, t: b"debugtime" + _arg(c) + _CRLF,
}

_PARSERS: dict[str, Callable[[Command, bytes, int], tuple[Reply | None, int]]] = {
    **{name: parse_single for name in _ENCODERS},
    **{name: parse_retrieval for name in RETRIEVAL},
    "incr": parse_number,
    "decr": parse_number,
    "stats": parse_stats,
    "lru_crawler_metadump": parse_metadump,
}


class AsciiCodec:
    """The text protocol; ``closer`` ("mn" or "version") ends a noreply command."""

    protocol = "ascii"
    commands = frozenset(_ENCODERS)

    def __init__(self, closer: str = "mn") -> None:
        if closer not in _CLOSERS:
            raise ValueError(f"closer must be one of {sorted(_CLOSERS)}, not {closer!r}")
        self._closer_bytes, answer = _CLOSERS[closer]
        self._parse_noreply = _closed_noreply(answer)
        self._tail = b" noreply"

    def encode(self, command: Command) -> bytes:
        try:
            encoder = _ENCODERS[command.name]
        except KeyError:
            raise ValueError(f"ascii codec has no command {command.name!r}") from None
        if command.noreply and command.name in NOREPLY_OK:
            return encoder(command, self._tail) + self._closer_bytes
        return encoder(command, b"")

    def parse(self, command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
        if command.noreply and command.name in NOREPLY_OK:
            return self._parse_noreply(command, buf, start)
        return _PARSERS[command.name](command, buf, start)

    def eof_reply(self, command: Command) -> Reply | None:
        """The answer when the server closes the stream instead of replying: a shutdown
        it obeyed; for any other command the end of stream is an error (None)."""
        if command.name == "shutdown":
            return Reply(Status.OK, text="connection closed by shutdown")
        return None
