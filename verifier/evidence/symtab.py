"""Symbols of an ELF file (from ``nm``), its load address in a process, its debug file.

Used to name what a live process is doing without gdb: a mutex address becomes
``stats_lock`` or ``thread_locks+0x40``, a program counter becomes ``__lll_lock_wait``.
Tables are parsed once per file (keyed by device, inode, size and mtime) and kept in
memory: ``nm`` on memcached takes ~10 ms and on libc's 4 MB debug file ~60 ms, far more
than the few milliseconds the whole wait-for proof may cost once the tables are warm.
"""

from __future__ import annotations

import bisect
import functools
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import BadInput, EnvironmentMissing
from verifier.util.proc import require_tool, run

DEBUG_ROOT = Path("/usr/lib/debug")  # where Debian's -dbg / -dbgsym packages put build-ids
_OBJECT_TYPES = frozenset("BbDdRrGgSsCVv")
_FUNCTION_TYPES = frozenset("TtWwi")
_PT_LOAD, _PT_NOTE, _NT_GNU_BUILD_ID = 1, 4, 3
_Identity = tuple[str, int, int, int, int]  # path, device, inode, size, mtime: the cache key


@dataclass(frozen=True)
class Symbol:
    address: int  # link-time address (add the load bias for the address in a process)
    size: int
    name: str
    function: bool


@dataclass(frozen=True)
class ElfInfo:
    first_load_vaddr: int  # the lowest PT_LOAD p_vaddr, page aligned (0 for PIE / .so)
    build_id: str | None


def elf_info(path: Path) -> ElfInfo:
    """Program headers and GNU build-id of a 64-bit little-endian ELF file."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(64)
            if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                raise BadInput(f"{path} is not a 64-bit little-endian ELF file")
            phoff = struct.unpack_from("<Q", header, 32)[0]
            phentsize, phnum = struct.unpack_from("<HH", header, 54)
            handle.seek(phoff)
            table = handle.read(phentsize * phnum)
            loads: list[int] = []
            build_id = None
            for index in range(phnum):
                p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
                    "<IIQQQQ", table, index * phentsize
                )
                if p_type == _PT_LOAD:
                    loads.append(p_vaddr & ~0xFFF)
                elif p_type == _PT_NOTE and build_id is None:
                    handle.seek(p_offset)
                    build_id = _build_id(handle.read(p_filesz))
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    return ElfInfo(min(loads) if loads else 0, build_id)


def _build_id(notes: bytes) -> str | None:
    at = 0
    while at + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, at)
        name_at = at + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        if kind == _NT_GNU_BUILD_ID and notes[name_at : name_at + namesz] == b"GNU\0":
            return notes[desc_at : desc_at + descsz].hex()
        at = desc_at + ((descsz + 3) & ~3)
    return None


def debug_file(build_id: str | None, debug_root: Path | None = DEBUG_ROOT) -> Path | None:
    """The separate debug file of a build-id (``.build-id/ab/cdef....debug``), if installed."""
    if not build_id or debug_root is None or len(build_id) < 3:
        return None
    path = debug_root / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    return path if path.is_file() else None


class SymbolTable:
    """Functions and data objects of one ELF file, looked up by link-time address."""

    def __init__(self, symbols: list[Symbol], source: str = "", build_id: str | None = None):
        self.source = source  # the file(s) the names came from
        self.build_id = build_id
        self._symbols = sorted(symbols, key=lambda s: (s.address, -s.size))
        self._starts = [s.address for s in self._symbols]
        self._by_name = {s.name: s for s in self._symbols}

    def __len__(self) -> int:
        return len(self._symbols)

    def __bool__(self) -> bool:  # an empty table is still a table
        return True

    def symbol(self, name: str) -> Symbol | None:
        return self._by_name.get(name)

    def containing(
        self, address: int, *, function: bool | None = None
    ) -> tuple[Symbol, int] | None:
        """The symbol whose [address, address + size) holds ``address``, and the offset in it.

        A symbol without a size only matches its own address. Nested symbols (a static
        inside a section symbol) resolve to the innermost, i.e. the latest start.
        """
        index = bisect.bisect_right(self._starts, address)
        for candidate in reversed(self._symbols[max(0, index - 64) : index]):
            if function is not None and candidate.function != function:
                continue
            offset = address - candidate.address
            if offset < max(candidate.size, 1):
                return candidate, offset
        return None

    def name_of(self, address: int, *, function: bool | None = None) -> str | None:
        """``name`` or ``name+0x40`` for ``address``, or None."""
        found = self.containing(address, function=function)
        if found is None:
            return None
        symbol, offset = found
        return symbol.name if offset == 0 else f"{symbol.name}+{offset:#x}"

    def merged(self, other: SymbolTable) -> SymbolTable:
        """This table plus the names ``other`` has at addresses this one lacks."""
        have = {(s.address, s.name) for s in self._symbols}
        extra = [s for s in other._symbols if (s.address, s.name) not in have]
        sources = " + ".join(x for x in (self.source, other.source) if x)
        return SymbolTable([*self._symbols, *extra], sources, self.build_id or other.build_id)

    @classmethod
    def load(
        cls, binary: Path, symbol_file: Path | None = None, *, debug_root: Path | None = DEBUG_ROOT
    ) -> SymbolTable:
        """The symbols of ``binary``: from ``symbol_file`` if given (a stripped binary's
        separate debug file), else its own ``.symtab``, else its build-id debug file under
        ``debug_root``, else its dynamic symbols. Cached per file."""
        if not binary.is_file():
            raise BadInput(f"no such binary: {binary}")
        if symbol_file is not None and not symbol_file.is_file():
            raise BadInput(f"no such symbol file: {symbol_file}")
        return _cached_load(
            _identity(binary),
            _identity(symbol_file) if symbol_file is not None else None,
            str(debug_root) if debug_root is not None else None,
        )

    @staticmethod
    def _load(binary: Path, symbol_file: Path | None, debug_root: Path | None) -> SymbolTable:
        info = elf_info(binary)
        if symbol_file is not None:
            theirs = elf_info(symbol_file).build_id
            if info.build_id and theirs and info.build_id != theirs:
                raise BadInput(
                    f"symbol file {symbol_file} is for another build "
                    f"(build-id {theirs}, binary has {info.build_id})"
                )
            table = _cached_nm(*_identity(symbol_file), dynamic=False)
        else:
            table = _cached_nm(*_identity(binary), dynamic=False)
            if not len(table):
                separate = debug_file(info.build_id, debug_root)
                if separate is not None:
                    table = _cached_nm(*_identity(separate), dynamic=False)
        dynamic = _cached_nm(*_identity(binary), dynamic=True)
        merged = table.merged(dynamic) if len(table) else dynamic
        return SymbolTable(list(merged._symbols), merged.source or str(binary), info.build_id)


def parse_nm(text: str, source: str = "") -> SymbolTable:
    """Parse ``nm --defined-only -S`` output (with or without sizes; ``-D`` versions dropped)."""
    symbols: list[Symbol] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            address, size, kind, name = parts
        elif len(parts) == 3:
            (address, kind, name), size = parts, "0"
        else:
            continue
        if kind not in _OBJECT_TYPES and kind not in _FUNCTION_TYPES:
            continue
        try:
            symbols.append(
                Symbol(int(address, 16), int(size, 16), name.split("@")[0], kind in _FUNCTION_TYPES)
            )
        except ValueError:
            continue
    return SymbolTable(symbols, source)


def _identity(path: Path) -> _Identity:
    stat = os.stat(path)
    return str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=32)
def _cached_load(
    binary: _Identity, symbol_file: _Identity | None, debug_root: str | None
) -> SymbolTable:
    return SymbolTable._load(
        Path(binary[0]),
        Path(symbol_file[0]) if symbol_file else None,
        Path(debug_root) if debug_root is not None else None,
    )


@functools.lru_cache(maxsize=32)
def _cached_nm(
    path: str, dev: int, ino: int, size: int, mtime_ns: int, *, dynamic: bool
) -> SymbolTable:
    nm = require_tool("nm", "apt-get install binutils")
    argv = [nm, "--defined-only", "-S", *(["-D"] if dynamic else []), path]
    result = run(argv, timeout_s=60)
    if result.timed_out:
        raise EnvironmentMissing(f"nm timed out on {path}")
    # "no symbols" (a stripped file) is an empty table, not an error
    return parse_nm(result.output, path)
