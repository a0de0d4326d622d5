"""memcached's meta protocol (mg/ms/md/ma/mn) as a codec, in its 1.6.10+ syntax.

1.6.10 made the data length of ``ms`` a token and the success code HD; 1.5.19-1.6.9 spoke
an older meta (measured on 1.5.19: this codec's ``ms`` gets "CLIENT_ERROR invalid or
duplicate flag"), which ``verifier.stress.features`` reports as no meta.

Command names (``arg`` adds flags verbatim, e.g. "I" to invalidate, "MD" for decrement):

- ``mg`` (``key``): flags ``v c t`` unless ``arg`` names others; VA (value) or HD -> HIT with
  ``value``, ``cas`` (c), ``ttl`` (t, -1 for none); EN -> MISS.
- ``ms`` (``key``, ``value``; T<exptime>, F<flags>, C<cas> when non-zero): HD -> STORED,
  NS -> NOT_STORED, EX -> EXISTS (cas lost), NF -> NOT_FOUND (cas on a missing key).
- ``md`` (``key``, C<cas> when non-zero): HD -> DELETED, NF -> NOT_FOUND, EX -> EXISTS.
- ``ma`` (``key``, D<delta>, ``v`` to return the value; ``initial`` not None adds
  N<exptime> J<initial>, autovivify on a miss; ``arg`` "MD" decrements): VA/HD -> NUMBER,
  NF -> NOT_FOUND, NS -> NOT_STORED, EX -> EXISTS.
- ``mn``: MN -> OK.

Quiet batches: ``mg``, ``ms``, ``md``, ``ma`` given ``keys`` (``key`` unused) send one
request per key with ``q`` and ``O<index>`` (mg adds ``k``), closed by ``mn``; the parse
reads to the MN. mg: HIT with the hits in ``values`` (in answer order), or MISS. The others:
the command's success status when no key failed, else the first failure's status (the
server answers only failures under ``q``: NS/EX/NF, errors); ``number`` = how many failed.

Measured (``benchmarks/protocol_codecs.py --runs 5``, encode + parse from a buffer of 64 pipelined
replies, best of 5, on this 2-core box at load average 15-19 from other jobs: figures are a
floor): mg hit (v c t) 85 k ops/s, ms 178 k, ma 86 k (at load 8-10, best of 15: 210 k,
224 k, 169 k); the return
flags cost the difference (one pass over the tokens, an int() per c/t/O).
"""

from __future__ import annotations

from verifier.stress.protocol.base import Command, ProtocolError, Reply, Status

_CRLF = b"\r\n"
_MAX_LINE = 8192

_STATUS: dict[str, dict[bytes, Status]] = {
    "mg": {b"VA": Status.HIT, b"HD": Status.HIT, b"EN": Status.MISS},
    "ms": {
        b"HD": Status.STORED,
        b"NS": Status.NOT_STORED,
        b"EX": Status.EXISTS,
        b"NF": Status.NOT_FOUND,
    },
    "md": {b"HD": Status.DELETED, b"NF": Status.NOT_FOUND, b"EX": Status.EXISTS},
    "ma": {
        b"VA": Status.NUMBER,
        b"HD": Status.NUMBER,
        b"NF": Status.NOT_FOUND,
        b"NS": Status.NOT_STORED,
        b"EX": Status.EXISTS,
    },
    "mn": {b"MN": Status.OK},
}
_ERRORS = (
    (b"CLIENT_ERROR", Status.CLIENT_ERROR),
    (b"SERVER_ERROR", Status.SERVER_ERROR),
    (b"ERROR", Status.ERROR),
)
_MG_FLAGS = b"v c t"


def _error(line: bytes) -> Reply:
    for prefix, status in _ERRORS:
        if line.startswith(prefix):
            return Reply(status, text=line.decode("latin-1"))
    return Reply(Status.OTHER, text=line.decode("latin-1"))


def _returned(reply: Reply, tokens: list[bytes]) -> tuple[bytes | None, int | None]:
    """Fill ``cas``/``ttl`` from the return flags; the key (k) and opaque (O) if returned."""
    key = opaque = None
    for token in tokens:
        flag = token[:1]
        if flag == b"c":
            reply.cas = int(token[1:])
        elif flag == b"t":
            reply.ttl = int(token[1:])
        elif flag == b"k":
            key = token[1:]
        elif flag == b"O":
            opaque = int(token[1:])
    return key, opaque


def _one(
    name: str, buf: bytes, start: int
) -> tuple[Reply | None, int, bytes | None, bytes | None, int | None]:
    """One answer at ``start``: (reply, end, key (k), value (VA), opaque (O))."""
    eol = buf.find(_CRLF, start)
    if eol < 0:
        if len(buf) - start > _MAX_LINE:
            raise ProtocolError(f"no end of line within {_MAX_LINE} bytes")
        return None, start, None, None, None
    line = buf[start:eol]
    status = _STATUS[name].get(line[:2]) if len(line) == 2 or line[2:3] == b" " else None
    if status is None:
        if line[:2] in (b"VA", b"HD", b"EN", b"NS", b"EX", b"NF", b"MN"):
            raise ProtocolError(f"{name}: answer {line[:60]!r} of another meta command")
        return _error(line), eol + 2, None, None, None
    tokens = line.split()
    end = eol + 2
    value = None
    if line.startswith(b"VA"):
        try:
            size = int(tokens[1])
        except (IndexError, ValueError):
            raise ProtocolError(f"bad VA line {line[:60]!r}") from None
        if len(buf) < end + size + 2:
            return None, start, None, None, None
        if buf[end + size : end + size + 2] != _CRLF:
            raise ProtocolError(f"VA block of {size} bytes not closed by CRLF")
        value = buf[end : end + size]
        end += size + 2
        tokens = tokens[2:]
    else:
        tokens = tokens[1:]
    reply = Reply(status)
    key, opaque = _returned(reply, tokens) if tokens else (None, None)
    if status is Status.NUMBER and value is not None:
        reply.number = int(value)
    elif status is Status.HIT:
        reply.value = value
    return reply, end, key, value, opaque


def _flags(c: Command, extra: bytes) -> bytes:
    """``extra`` then the command's own ``arg`` flags, single-spaced."""
    if not c.arg:
        return extra
    return extra + b" " + c.arg.encode() if extra else c.arg.encode()


def _ms_flags(c: Command) -> bytes:
    parts = []
    if c.exptime:
        parts.append(b"T%d" % c.exptime)
    if c.flags:
        parts.append(b"F%d" % c.flags)
    if c.cas:
        parts.append(b"C%d" % c.cas)
    return _flags(c, b" ".join(parts))


def _ma_flags(c: Command) -> bytes:
    flags = b"v D%d" % c.delta
    if c.initial is not None:
        flags += b" N%d J%d" % (c.exptime, c.initial)
    return _flags(c, flags)


def _line(cmd: bytes, key: bytes, flags: bytes) -> bytes:
    return cmd + b" " + key + (b" " + flags if flags else b"") + _CRLF


def _encode_one(c: Command) -> bytes:
    name = c.name
    if name == "mg":
        return _line(b"mg", c.key, c.arg.encode() if c.arg else _MG_FLAGS)
    if name == "ms":
        flags = _ms_flags(c)
        return b"ms %b %d%b\r\n%b\r\n" % (
            c.key,
            len(c.value),
            b" " + flags if flags else b"",
            c.value,
        )
    if name == "md":
        return _line(b"md", c.key, _flags(c, b"C%d" % c.cas if c.cas else b""))
    if name == "ma":
        return _line(b"ma", c.key, _ma_flags(c))
    return b"mn\r\n"


def _encode_batch(c: Command) -> bytes:
    name = c.name.encode()
    if c.name == "mg":
        flags = (c.arg.encode() if c.arg else _MG_FLAGS) + b" k q"
    elif c.name == "ms":
        flags = _ms_flags(c) + b" q"
    elif c.name == "md":
        flags = _flags(c, b"C%d" % c.cas if c.cas else b"") + b" q"
    else:
        flags = _ma_flags(c) + b" q"
    flags = flags.lstrip()
    out = []
    for i, key in enumerate(c.keys):
        if c.name == "ms":
            out.append(b"ms %b %d %b O%d\r\n%b\r\n" % (key, len(c.value), flags, i, c.value))
        else:
            out.append(b"%b %b %b O%d\r\n" % (name, key, flags, i))
    out.append(b"mn\r\n")
    return b"".join(out)


_SUCCESS = {"ms": Status.STORED, "md": Status.DELETED, "ma": Status.NUMBER}


class MetaCodec:
    protocol = "meta"
    commands = frozenset(_STATUS)

    def encode(self, command: Command) -> bytes:
        if command.name not in _STATUS:
            raise ValueError(f"meta codec has no command {command.name!r}")
        if command.keys and command.name != "mn":
            return _encode_batch(command)
        return _encode_one(command)

    def eof_reply(self, command: Command) -> Reply | None:
        return None

    def parse(self, command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
        if command.keys and command.name != "mn":
            return self._parse_batch(command, buf, start)
        reply, end, _, _, _ = _one(command.name, buf, start)
        return reply, end

    def _parse_batch(self, command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
        name = command.name
        pos = start
        values: list[tuple[bytes, bytes, int | None]] = []
        failures: list[Reply] = []
        while True:
            if buf.startswith(b"MN\r\n", pos):
                pos += 4
                break
            if len(buf) - pos < 4 and b"MN\r\n".startswith(buf[pos:]):
                return None, start
            reply, end, key, value, opaque = _one(name, buf, pos)
            if reply is None:
                return None, start
            if name == "mg" and reply.status is Status.HIT:
                if key is None:
                    if opaque is None or opaque >= len(command.keys):
                        raise ProtocolError(f"mg batch: hit without key or opaque {opaque}")
                    key = command.keys[opaque]
                values.append((key, value if value is not None else b"", reply.cas))
            elif name == "mg" or reply.status is not _SUCCESS[name]:
                failures.append(reply)
            pos = end
        if name == "mg":
            errors = [f for f in failures if f.status is not Status.MISS]
            if errors:
                return errors[0], pos
            if values:
                first = values[0]
                return Reply(Status.HIT, value=first[1], cas=first[2], values=values), pos
            return Reply(Status.MISS), pos
        if failures:
            first_failure = failures[0]
            first_failure.number = len(failures)
            return first_failure, pos
        return Reply(_SUCCESS[name], number=0), pos
