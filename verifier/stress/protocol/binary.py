"""memcached's binary protocol as a codec (opcodes and status codes of protocol_binary.h,
written out here).

Command names:

- ``bin_get``, ``bin_getk`` (``key``): HIT with ``value``/``cas`` (getk also names the key in
  ``values``), or MISS.
- ``bin_getq``, ``bin_getkq`` (``keys``): a quiet batch, one request per key (opaque = its
  index) closed by a noop; one Reply, ``values`` the hits in order, HIT if any.
- ``bin_set``, ``bin_add``, ``bin_replace`` (``key``, ``value``, ``flags``, ``exptime``,
  ``cas`` when not 0): STORED, or NOT_STORED (add on an existing key, replace on a missing
  one), EXISTS / NOT_FOUND (a cas that lost / on a missing key).
- ``bin_setq`` (``keys``, one ``value``): quiet sets closed by a noop; STORED when every set
  was silent, else the first failure's status, ``number`` = how many failed.
- ``bin_incr``, ``bin_decr`` (``delta``, ``initial``): NUMBER; ``initial=None`` sends
  exptime 0xffffffff (do not create: NOT_FOUND on a missing key), else a missing key is
  created with ``initial`` (and ``exptime``).
- ``bin_delete``; ``bin_touch`` and ``bin_gat`` (``exptime``); ``bin_noop``; ``bin_version``
  (``text``); ``bin_stats`` (``arg`` "" or a group such as "settings"; the stream of stat
  packets up to the empty one).

Status mapping: 0x81 unknown command -> ERROR, 0x03/0x04/0x06 (too big, invalid, non-numeric
delta) -> CLIENT_ERROR, 0x82..0x86 -> SERVER_ERROR, anything else unknown -> OTHER.

Measured (``benchmarks/protocol_codecs.py --runs 5``, encode + parse from a buffer of 64 pipelined
replies, best of 5, on this 2-core box at load average 15-19 from other jobs: figures are a
floor): get hit 105 k ops/s, set 110 k, incr 129 k; at load 8-10, best of 15: 413 k,
467 k, 355 k.
One precompiled ``struct`` per header; bodies are
sliced by the header's lengths, never scanned.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from verifier.stress.protocol.base import Command, ProtocolError, Reply, Status

REQ, RES = 0x80, 0x81
HEADER = struct.Struct(
    ">BBHBBHIIQ"
)  # magic opcode keylen extlen datatype status/vb body opaque cas
_HLEN = HEADER.size  # 24
_FLAGS_EXP = struct.Struct(">II")
_ARITH = struct.Struct(">QQI")
_EXP = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
NO_CREATE = 0xFFFFFFFF

GET, SET, ADD, REPLACE, DELETE, INCR, DECR = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
GETQ, NOOP, VERSION, GETK, GETKQ, STAT, SETQ = 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x10, 0x11
TOUCH, GAT = 0x1C, 0x1D

OK_, ENOENT, EEXISTS, E2BIG, EINVAL, NOT_STORED, DELTA_BADVAL = 0, 1, 2, 3, 4, 5, 6
UNKNOWN_COMMAND = 0x81

_COMMON: dict[int, Status] = {
    E2BIG: Status.CLIENT_ERROR,
    EINVAL: Status.CLIENT_ERROR,
    NOT_STORED: Status.NOT_STORED,
    DELTA_BADVAL: Status.CLIENT_ERROR,
    UNKNOWN_COMMAND: Status.ERROR,
    **{code: Status.SERVER_ERROR for code in range(0x82, 0x87)},
}


def _statuses(ok: Status, enoent: Status, eexists: Status) -> dict[int, Status]:
    return {**_COMMON, OK_: ok, ENOENT: enoent, EEXISTS: eexists}


_BY_NAME: dict[str, dict[int, Status]] = {
    "bin_get": _statuses(Status.HIT, Status.MISS, Status.EXISTS),
    "bin_getk": _statuses(Status.HIT, Status.MISS, Status.EXISTS),
    "bin_gat": _statuses(Status.HIT, Status.MISS, Status.EXISTS),
    "bin_set": _statuses(Status.STORED, Status.NOT_FOUND, Status.EXISTS),
    "bin_add": _statuses(Status.STORED, Status.NOT_FOUND, Status.NOT_STORED),
    "bin_replace": _statuses(Status.STORED, Status.NOT_STORED, Status.EXISTS),
    "bin_incr": _statuses(Status.NUMBER, Status.NOT_FOUND, Status.EXISTS),
    "bin_decr": _statuses(Status.NUMBER, Status.NOT_FOUND, Status.EXISTS),
    "bin_delete": _statuses(Status.DELETED, Status.NOT_FOUND, Status.EXISTS),
    "bin_touch": _statuses(Status.TOUCHED, Status.NOT_FOUND, Status.EXISTS),
    "bin_noop": _statuses(Status.OK, Status.OTHER, Status.OTHER),
    "bin_version": _statuses(Status.OK, Status.OTHER, Status.OTHER),
    "bin_stats": _statuses(Status.STATS, Status.OTHER, Status.OTHER),
}
_BY_NAME["bin_setq"] = _BY_NAME["bin_set"]
_OPCODE = {
    "bin_get": GET,
    "bin_getk": GETK,
    "bin_gat": GAT,
    "bin_set": SET,
    "bin_add": ADD,
    "bin_replace": REPLACE,
    "bin_incr": INCR,
    "bin_decr": DECR,
    "bin_delete": DELETE,
    "bin_touch": TOUCH,
    "bin_noop": NOOP,
    "bin_version": VERSION,
    "bin_stats": STAT,
}


def request(opcode: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"",
            cas: int = 0, opaque: int = 0) -> bytes:  # fmt: skip
    body = len(key) + len(extras) + len(value)
    return (
        HEADER.pack(REQ, opcode, len(key), len(extras), 0, 0, body, opaque, cas)
        + extras
        + key
        + value
    )


_NOOP = request(NOOP)


def _storage(opcode: int) -> Callable[[Command], bytes]:
    def encode(c: Command) -> bytes:
        return request(opcode, c.key, _FLAGS_EXP.pack(c.flags, c.exptime), c.value, c.cas)

    return encode


def _arith(opcode: int) -> Callable[[Command], bytes]:
    def encode(c: Command) -> bytes:
        if c.initial is None:
            extras = _ARITH.pack(c.delta, 0, NO_CREATE)
        else:
            extras = _ARITH.pack(c.delta, c.initial, c.exptime)
        return request(opcode, c.key, extras)

    return encode


def _quiet_get(opcode: int) -> Callable[[Command], bytes]:
    def encode(c: Command) -> bytes:
        return b"".join(request(opcode, k, opaque=i) for i, k in enumerate(c.keys)) + _NOOP

    return encode


def _encode_setq(c: Command) -> bytes:
    extras = _FLAGS_EXP.pack(c.flags, c.exptime)
    return (
        b"".join(request(SETQ, k, extras, c.value, opaque=i) for i, k in enumerate(c.keys)) + _NOOP
    )


_ENCODERS: dict[str, Callable[[Command], bytes]] = {
    "bin_get": lambda c: request(GET, c.key),
    "bin_getk": lambda c: request(GETK, c.key),
    "bin_getq": _quiet_get(GETQ),
    "bin_getkq": _quiet_get(GETKQ),
    "bin_set": _storage(SET),
    "bin_add": _storage(ADD),
    "bin_replace": _storage(REPLACE),
    "bin_setq": _encode_setq,
    "bin_incr": _arith(INCR),
    "bin_decr": _arith(DECR),
    "bin_delete": lambda c: request(DELETE, c.key, cas=c.cas),
    "bin_noop": lambda c: _NOOP,
    "bin_touch": lambda c: request(TOUCH, c.key, _EXP.pack(c.exptime)),
    "bin_gat": lambda c: request(GAT, c.key, _EXP.pack(c.exptime)),
    "bin_version": lambda c: request(VERSION),
    "bin_stats": lambda c: request(STAT, c.arg.encode()),
}


def _packet(buf: bytes, start: int) -> tuple[tuple[int, ...] | None, int]:
    """The header of the response at ``start`` and the offset after its body."""
    if len(buf) - start < _HLEN:
        return None, start
    header = HEADER.unpack_from(buf, start)
    if header[0] != RES:
        raise ProtocolError(f"binary response magic 0x{header[0]:02x} at offset {start}")
    end = start + _HLEN + header[6]
    if len(buf) < end:
        return None, start
    return header, end


def _error_text(buf: bytes, start: int, header: tuple[int, ...]) -> str:
    body = start + _HLEN + header[3] + header[2]
    return f"status 0x{header[5]:02x} " + buf[body : start + _HLEN + header[6]].decode("latin-1")


class BinaryCodec:
    protocol = "binary"
    commands = frozenset(_ENCODERS)

    def encode(self, command: Command) -> bytes:
        try:
            return _ENCODERS[command.name](command)
        except KeyError:
            raise ValueError(f"binary codec has no command {command.name!r}") from None

    def eof_reply(self, command: Command) -> Reply | None:
        return None

    def parse(self, command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
        name = command.name
        if name in ("bin_getq", "bin_getkq", "bin_setq"):
            return self._parse_quiet(command, buf, start)
        if name == "bin_stats":
            return self._parse_stats(buf, start)
        header, end = _packet(buf, start)
        if header is None:
            return None, start
        _, opcode, keylen, extlen, _, status, _, _, cas = header
        if opcode != _OPCODE[name]:
            raise ProtocolError(f"{name}: response opcode 0x{opcode:02x}")
        result = _BY_NAME[name].get(status, Status.OTHER)
        if status != OK_:
            reply = Reply(result)
            if result in (Status.OTHER, Status.ERROR, Status.CLIENT_ERROR, Status.SERVER_ERROR):
                reply.text = _error_text(buf, start, header)
            return reply, end
        body = start + _HLEN
        if result is Status.HIT:
            key = buf[body + extlen : body + extlen + keylen]
            value = buf[body + extlen + keylen : end]
            return Reply(result, value=value, cas=cas, values=[(key, value, cas)]), end
        if result is Status.NUMBER:
            return Reply(result, number=_U64.unpack_from(buf, body)[0], cas=cas), end
        if name == "bin_version":
            return Reply(result, text=buf[body:end].decode("latin-1")), end
        return Reply(result, cas=cas or None), end

    def _parse_quiet(self, command: Command, buf: bytes, start: int) -> tuple[Reply | None, int]:
        """Packets up to the noop's: the hits (getq/getkq) or the failures (setq)."""
        pos = start
        values: list[tuple[bytes, bytes, int | None]] = []
        failures: list[Reply] = []
        setq = command.name == "bin_setq"
        while True:
            header, end = _packet(buf, pos)
            if header is None:
                return None, start
            _, opcode, keylen, extlen, _, status, _, opaque, cas = header
            if opcode == NOOP:
                break
            body = pos + _HLEN
            if setq or status != OK_:
                mapping = _BY_NAME["bin_set"]
                failures.append(Reply(mapping.get(status, Status.OTHER), text=f"key #{opaque}"))
            else:
                if opaque >= len(command.keys):
                    raise ProtocolError(f"quiet get answered opaque {opaque}")
                key = buf[body + extlen : body + extlen + keylen] or command.keys[opaque]
                values.append((key, buf[body + extlen + keylen : end], cas))
            pos = end
        if setq:
            if failures:
                first = failures[0]
                first.number = len(failures)
                return first, end
            return Reply(Status.STORED, number=0), end
        if failures:
            return failures[0], end
        if values:
            first_value = values[0]
            reply = Reply(Status.HIT, value=first_value[1], cas=first_value[2], values=values)
            return reply, end
        return Reply(Status.MISS), end

    def _parse_stats(self, buf: bytes, start: int) -> tuple[Reply | None, int]:
        pos = start
        stats: dict[str, str] = {}
        while True:
            header, end = _packet(buf, pos)
            if header is None:
                return None, start
            _, opcode, keylen, extlen, _, status, _, _, _ = header
            if opcode != STAT:
                raise ProtocolError(f"bin_stats: response opcode 0x{opcode:02x}")
            if status != OK_:
                return Reply(_BY_NAME["bin_stats"].get(status, Status.OTHER)), end
            if keylen == 0:
                return Reply(Status.STATS, stats=stats), end
            body = pos + _HLEN + extlen
            stats[buf[body : body + keylen].decode("latin-1")] = buf[body + keylen : end].decode(
                "latin-1"
            )
            pos = end
