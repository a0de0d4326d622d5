"""The main executable's data objects (nm) and code locations (addr2line).

Discovery watches global and static data objects of the executable: ``nm --defined-only
-S -l`` lists b/B/d/D symbols (bss and data, local and global) with their size and, with
debug info, the defining file. Read-only data cannot race; libc's objects copied into
the executable (``stderr@GLIBC_2.2.5``) and the C runtime's own (``completed.0``) are not
the program's state. Names are stable across commits, addresses are not: a point is keyed
by name (``storage`` is static in two files of memcached 1.6.18, so an ambiguous name
is qualified by its file, ``slabs.c:storage``), and the compiler's numbering of a
function-local static (``use_accept4.3``) is dropped from the key.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import EnvironmentMissing, NotApplicable
from verifier.util.proc import require_tool

DATA_TYPES = frozenset("bBdD")
_CRT_NAMES = frozenset({"completed.0", "completed.1", "__dso_handle", "__TMC_END__"})
_LOCAL_SUFFIX = re.compile(r"\.\d+$")
NM_HINT = "apt-get install binutils"


@dataclass(frozen=True)
class DataSymbol:
    """One data object of the executable."""

    name: str  # as nm prints it (a function-local static keeps its ".N")
    offset: int  # st_value: the address before the load bias
    size: int
    file: str  # defining source file's base name ("" without debug info)
    key: str = ""  # stable name for keys: see the module docstring

    def contains(self, offset: int) -> bool:
        return self.offset <= offset < self.offset + self.size


def parse_nm(text: str) -> list[DataSymbol]:
    """Data objects from ``nm --defined-only -S -l`` output, with their stable keys."""
    found: list[DataSymbol] = []
    for line in text.splitlines():
        fields, _, where = line.partition("\t")
        parts = fields.split()
        if len(parts) != 4 or parts[2] not in DATA_TYPES:
            continue
        name = parts[3]
        if "@" in name or name in _CRT_NAMES or name.startswith("__"):
            continue
        size = int(parts[1], 16)
        if size == 0:
            continue
        file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1] if where else ""
        found.append(DataSymbol(name, int(parts[0], 16), size, file))
    bases = Counter(_LOCAL_SUFFIX.sub("", s.name) for s in found)
    keyed = []
    for sym in found:
        base = _LOCAL_SUFFIX.sub("", sym.name)
        key = base if bases[base] == 1 or not sym.file else f"{sym.file}:{base}"
        keyed.append(DataSymbol(sym.name, sym.offset, sym.size, sym.file, key))
    return sorted(keyed, key=lambda s: s.offset)


def data_symbols(binary: Path) -> list[DataSymbol]:
    """The executable's data objects (NotApplicable when it has no symbol table)."""
    nm = require_tool("nm", NM_HINT)
    proc = subprocess.run(
        [nm, "--defined-only", "-S", "-l", str(binary)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise NotApplicable(f"nm cannot read {binary}: {proc.stderr.strip()[:200]}")
    symbols = parse_nm(proc.stdout)
    if not symbols:
        raise NotApplicable(f"{binary} has no data symbols (stripped?): auto cannot name points")
    return symbols


def symbol_at(symbols: Sequence[DataSymbol], offset: int) -> DataSymbol | None:
    """The data object that contains ``offset`` (an address minus the load bias)."""
    for sym in symbols:
        if sym.contains(offset):
            return sym
    return None


def watch_span(offset: int, size: int) -> tuple[int, int]:
    """The (offset, length) a hardware watchpoint can cover at the start of an object.

    x86 debug registers watch 1, 2, 4 or 8 bytes at an address aligned to that length;
    a larger object is watched on its first aligned word (a struct's first field, an
    array's first element).
    """
    for length in (8, 4, 2, 1):
        if length <= max(size, 1) and offset % length == 0:
            return offset, length
    return offset, 1


@dataclass(frozen=True)
class CodeLocation:
    function: str  # innermost function ("??" unknown)
    file: str  # base name ("" unknown)
    line: int  # 0 unknown
    callers: tuple[str, ...] = ()  # functions it was inlined into, innermost first

    @property
    def known(self) -> bool:
        return self.line > 0 or self.function != "??"

    def text(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else "?"
        via = "".join(f" < {name}" for name in self.callers)
        return f"{where} ({self.function}{via})"


UNKNOWN = CodeLocation("??", "", 0)


def code_locations(binary: Path, offsets: Iterable[int]) -> dict[int, CodeLocation]:
    """addr2line for code offsets in the executable, in one call.

    Give the offset *inside* the instruction: a return address or the RIP after a
    trapped store points past it, so callers pass ``pc - load_bias - 1``.
    """
    wanted = sorted({o for o in offsets if o > 0})
    if not wanted:
        return {}
    try:
        addr2line = require_tool("addr2line", NM_HINT)
    except EnvironmentMissing:
        return dict.fromkeys(wanted, UNKNOWN)
    proc = subprocess.run(
        [addr2line, "-a", "-f", "-C", "-i", "-e", str(binary), *(f"{o:#x}" for o in wanted)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    out: dict[int, CodeLocation] = dict.fromkeys(wanted, UNKNOWN)
    if proc.returncode != 0:
        return out
    blocks: list[list[str]] = []
    for line in proc.stdout.splitlines():
        if line.startswith("0x") and " " not in line:
            blocks.append([])
        elif blocks:
            blocks[-1].append(line.strip())
    for offset, block in zip(wanted, blocks, strict=False):
        pairs = [(block[i], block[i + 1]) for i in range(0, len(block) - 1, 2)]
        if not pairs:
            continue
        function, where = pairs[0]
        file_part, _, line_part = where.rpartition(":")
        line_no = int(m.group()) if (m := re.match(r"\d+", line_part)) else 0
        callers = tuple(fn for fn, _ in pairs[1:] if fn != "??")
        out[offset] = CodeLocation(function, file_part.rsplit("/", 1)[-1], line_no, callers)
    return out
