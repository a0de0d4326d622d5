"""memcached's three wire protocols as codecs: a ``Command`` in, bytes out; bytes in, a
``Reply`` out. The workload clients speak through these and nothing else.

``encode`` is pure and a ``Command`` is frozen: the engine may encode a command once and send
the same bytes every time (the flood's hot path then costs only the parse). Which commands a
build and its running server accept: ``verifier.stress.features`` (``detect``,
``settings_gaps``)."""

from __future__ import annotations

from verifier.stress.protocol.ascii import AsciiCodec
from verifier.stress.protocol.base import Codec, Command, ProtocolError, Reply, Status
from verifier.stress.protocol.binary import BinaryCodec
from verifier.stress.protocol.meta import MetaCodec

__all__ = [
    "AsciiCodec",
    "BinaryCodec",
    "Codec",
    "Command",
    "MetaCodec",
    "ProtocolError",
    "Reply",
    "Status",
    "protocol_of",
]

_BY_PROTOCOL: dict[str, type[AsciiCodec] | type[BinaryCodec] | type[MetaCodec]] = {
    "ascii": AsciiCodec,
    "binary": BinaryCodec,
    "meta": MetaCodec,
}


def protocol_of(command_name: str) -> str:
    """The protocol ("ascii", "binary", "meta") whose codec speaks ``command_name``
    (ValueError for a name none speaks). Command names are unique across codecs."""
    for protocol, codec in _BY_PROTOCOL.items():
        if command_name in codec.commands:
            return protocol
    raise ValueError(f"no codec speaks {command_name!r}")
