"""One codec per protocol name, made once per process."""

from __future__ import annotations

import functools

from verifier.stress.protocol.base import Codec


@functools.cache
def codec_for(protocol: str) -> Codec:
    if protocol == "ascii":
        from verifier.stress.protocol.ascii import AsciiCodec

        return AsciiCodec()
    if protocol == "binary":
        from verifier.stress.protocol.binary import BinaryCodec

        return BinaryCodec()
    if protocol == "meta":
        from verifier.stress.protocol.meta import MetaCodec

        return MetaCodec()
    raise ValueError(f"unknown protocol {protocol!r}")
