"""Encode + parse throughput of the wire codecs, on canned replies of 1.6.18's shapes.

    .venv/bin/python benchmarks/protocol_codecs.py [--ops 200000] [--runs 3]

One op = encode one command and parse its whole reply from a buffer holding 64 pipelined
replies (the flood's hot path, no socket). Prints ops/s per codec and mix, best of runs
(the run least slowed by other jobs).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from verifier.stress.protocol.ascii import AsciiCodec
from verifier.stress.protocol.base import Codec, Command

PIPELINE = 64
Case = tuple[str, Codec, Command, bytes]


def _cases() -> list[Case]:
    ascii_ = AsciiCodec()
    value = b"x" * 32
    cases: list[Case] = [
        (
            "ascii get hit",
            ascii_,
            Command("get", key=b"key:000123"),
            b"VALUE key:000123 0 32\r\n" + value + b"\r\nEND\r\n",
        ),
        ("ascii set", ascii_, Command("set", key=b"key:000123", value=value), b"STORED\r\n"),
        ("ascii incr", ascii_, Command("incr", key=b"key:000123"), b"12345\r\n"),
    ]
    for extra in _extra_cases():
        cases.append(extra)
    return cases


def _extra_cases() -> list[Case]:
    """The binary and meta codecs, when present."""
    found: list[Case] = []
    for make in _EXTRA:
        found += make()
    return found


def _binary_cases() -> list[Case]:
    from verifier.stress.protocol import binary as b

    codec = b.BinaryCodec()
    value = b"x" * 32

    def res(opcode: int, extras: bytes = b"", body: bytes = b"", status: int = 0) -> bytes:
        n = len(extras) + len(body)
        return b.HEADER.pack(b.RES, opcode, 0, len(extras), 0, status, n, 0, 7) + extras + body

    return [
        ("binary get hit", codec, Command("bin_get", key=b"key:000123"),
         res(b.GET, b"\0\0\0\0", value)),
        ("binary set", codec, Command("bin_set", key=b"key:000123", value=value), res(b.SET)),
        ("binary incr", codec, Command("bin_incr", key=b"key:000123", initial=0),
         res(b.INCR, b"", (12345).to_bytes(8, "big"))),
    ]  # fmt: skip


def _meta_cases() -> list[Case]:
    from verifier.stress.protocol.meta import MetaCodec

    codec = MetaCodec()
    value = b"x" * 32
    return [
        ("meta mg hit", codec, Command("mg", key=b"key:000123"),
         b"VA 32 c7 t-1\r\n" + value + b"\r\n"),
        ("meta ms", codec, Command("ms", key=b"key:000123", value=value), b"HD\r\n"),
        ("meta ma", codec, Command("ma", key=b"key:000123", initial=0), b"VA 5\r\n12345\r\n"),
    ]  # fmt: skip


_EXTRA: list[Callable[[], list[Case]]] = [_binary_cases, _meta_cases]


def _rate(codec: Codec, command: Command, reply: bytes, ops: int) -> float:
    buf = reply * PIPELINE
    encode, parse = codec.encode, codec.parse
    rounds = max(1, ops // PIPELINE)
    started = time.perf_counter()
    for _ in range(rounds):
        pos = 0
        for _ in range(PIPELINE):
            encode(command)
            result, pos = parse(command, buf, pos)
    elapsed = time.perf_counter() - started
    assert result is not None and pos == len(buf)
    return rounds * PIPELINE / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for name, codec, command, reply in _cases():
        rates = [_rate(codec, command, reply, args.ops) for _ in range(args.runs)]
        print(f"{name:24} {max(rates):>12,.0f} ops/s  (best of {args.runs})")


if __name__ == "__main__":
    main()
