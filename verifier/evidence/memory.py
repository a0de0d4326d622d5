"""Read a live process without stopping it: mappings, memory, each thread's syscall, symbols.

No ptrace attach, no signal: ``/proc/PID/mem`` is read with ``pread`` (root may, and so may
the process's parent under Yama ``ptrace_scope`` 1), and ``/proc/PID/task/TID/syscall``
gives a sleeping thread's syscall number, arguments, stack pointer and program counter.
Each thread's ``schedstat`` run time tells whether it ran at all between two reads, which
is what turns two snapshots into a proof that nothing moved. x86-64 Linux only.
"""

from __future__ import annotations

import bisect
import os
import platform
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from verifier.errors import BadInput, EnvironmentMissing, HarnessError
from verifier.evidence.symtab import DEBUG_ROOT, SymbolTable, elf_info

SYS_FUTEX = 202
_USER_SPACE_END = 1 << 47  # x86-64 user addresses (4-level paging; 5-level goes to 1 << 56)


class ProcessGone(HarnessError):
    """The process exited (or is a zombie) while it was being read."""


class ProcessUnreadable(EnvironmentMissing):
    """/proc refuses to show this process's memory or syscalls (not root, not its parent)."""


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str  # "" for anonymous memory; "[heap]", "[stack]" ...

    def contains(self, address: int) -> bool:
        return self.start <= address < self.end


def read_maps(pid: int) -> list[Mapping]:
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except FileNotFoundError:
        raise ProcessGone(f"process {pid} is gone") from None
    except PermissionError:
        raise _unreadable(pid, "maps") from None
    maps: list[Mapping] = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        path = parts[5].strip() if len(parts) > 5 else ""
        maps.append(Mapping(start, end, parts[1], int(parts[2], 16), int(parts[4]), path))
    if not maps:
        raise ProcessGone(f"process {pid} has no memory left (exited)")
    return maps


def _unreadable(pid: int, what: str) -> ProcessUnreadable:
    return ProcessUnreadable(
        f"cannot read /proc/{pid}/{what}: permission denied "
        "(run as root, or as the process's parent with kernel.yama.ptrace_scope <= 1)"
    )


def require_alive(pid: int) -> None:
    """ProcessGone unless ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        raise ProcessGone(f"process {pid} is gone") from None
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        raise ProcessGone(f"process {pid} has exited (zombie)")


def require_x86_64() -> None:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise EnvironmentMissing(
            "reading thread states from /proc needs x86-64 Linux "
            f"(this is {platform.system()} {platform.machine()})"
        )


@dataclass(frozen=True)
class ThreadSample:
    """One thread as /proc shows it at one instant."""

    tid: int
    name: str
    state: str  # R, S, D, Z ... from /proc/PID/task/TID/stat
    syscall: int | None  # None: running on a CPU; -1: stopped outside a syscall
    args: tuple[int, ...] = ()
    sp: int = 0
    pc: int = 0
    run_ns: int | None = None  # total CPU time (schedstat), or context switches if absent

    @property
    def sleeping(self) -> bool:
        return self.state in ("S", "D") and self.syscall is not None and self.syscall >= 0


def thread_ids(pid: int) -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        raise ProcessGone(f"process {pid} is gone") from None


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except ProcessLookupError:
        return None
    except PermissionError:
        raise
    except OSError:
        return None


def sample_thread(pid: int, tid: int) -> ThreadSample | None:
    """The thread's state, syscall and CPU time; None if it has exited."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        stat = _read(f"{base}/stat")
        syscall = _read(f"{base}/syscall")
        run = _read(f"{base}/schedstat")
    except PermissionError:
        raise _unreadable(pid, f"task/{tid}/syscall") from None
    if stat is None or syscall is None:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    state = stat.rsplit(")", 1)[-1].split()[0]
    run_ns = int(run.split()[0]) if run else _context_switches(base)
    fields = syscall.split()
    if not fields or fields[0] == "running":
        return ThreadSample(tid, name, state, None, run_ns=run_ns)
    number = int(fields[0])
    if number < 0:  # blocked, but not in a syscall: "-1 sp pc"
        sp, pc = (int(x, 16) for x in fields[1:3]) if len(fields) >= 3 else (0, 0)
        return ThreadSample(tid, name, state, number, (), sp, pc, run_ns)
    values = [int(x, 16) for x in fields[1:]]
    return ThreadSample(tid, name, state, number, tuple(values[:6]), values[6], values[7], run_ns)


def _context_switches(base: str) -> int | None:
    status = _read(f"{base}/status") or ""
    counts = [int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line]
    return sum(counts) if counts else None


class ProcessMemory:
    """``pread`` on /proc/PID/mem; ``with ProcessMemory(pid) as mem: mem.read(addr, 8)``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self._fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ProcessGone(f"process {pid} is gone") from None
        except PermissionError:
            raise _unreadable(pid, "mem") from None

    def read(self, address: int, size: int) -> bytes | None:
        """``size`` bytes at ``address``; None if unmapped. ProcessGone if the process exited."""
        if not 0 <= address <= _USER_SPACE_END - size:
            return None
        try:
            data = os.pread(self._fd, size, address)
        except OSError:
            data = b""
        if len(data) == size:
            return data
        require_alive(self.pid)
        return None

    def read_int(self, address: int, size: int, *, signed: bool = False) -> int | None:
        data = self.read(address, size)
        return None if data is None else int.from_bytes(data, "little", signed=signed)

    def read_words(self, address: int, count: int) -> tuple[int, ...]:
        data = self.read(address, 8 * count)
        return () if data is None else struct.unpack(f"<{count}Q", data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ProcessMemory:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class Module:
    """One ELF file mapped into the process."""

    path: Path  # where to read the file (the executable via /proc/PID/exe)
    name: str
    inode: int
    bias: int  # runtime address - link-time address
    symbols: SymbolTable | None = None  # loaded on first use


@dataclass
class ProcessImage:
    """The process's mappings and modules, to turn addresses into names."""

    pid: int
    maps: list[Mapping]
    exe: Module
    debug_root: Path | None = DEBUG_ROOT
    _modules: dict[int, Module] = field(default_factory=dict)
    _starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.maps = sorted(self.maps, key=lambda m: m.start)
        self._starts = [m.start for m in self.maps]

    @classmethod
    def read(
        cls, pid: int, symbols: SymbolTable | None = None, *, debug_root: Path | None = DEBUG_ROOT
    ) -> ProcessImage:
        maps = read_maps(pid)
        exe_path = Path(f"/proc/{pid}/exe")
        try:
            inode = os.stat(exe_path).st_ino
        except FileNotFoundError:
            raise ProcessGone(f"process {pid} is gone") from None
        except PermissionError:
            raise _unreadable(pid, "exe") from None
        start = next((m.start for m in maps if m.inode == inode and m.offset == 0), None)
        if start is None:
            raise ProcessGone(f"process {pid} has no executable mapped (exiting?)")
        info = elf_info(exe_path)
        mismatch = symbols is not None and None not in (symbols.build_id, info.build_id)
        if symbols is not None and mismatch and symbols.build_id != info.build_id:
            raise BadInput(
                f"the symbols given ({symbols.source}) are not those of process {pid}'s "
                f"executable (build-id {symbols.build_id}, running {info.build_id})"
            )
        bias = start - info.first_load_vaddr
        real = Path(os.readlink(exe_path).removesuffix(" (deleted)"))
        try:  # the file's own path keeps the symbol cache warm across processes
            readable = real if os.stat(real).st_ino == inode else exe_path
        except OSError:
            readable = exe_path
        exe = Module(readable, real.name, inode, bias, symbols)
        image = cls(pid, maps, exe, debug_root)
        image._modules[inode] = exe
        return image

    def mapping_at(self, address: int) -> Mapping | None:
        index = bisect.bisect_right(self._starts, address) - 1
        if index >= 0 and self.maps[index].contains(address):
            return self.maps[index]
        return None

    def module_at(self, address: int) -> Module | None:
        """The ELF file whose mapping holds ``address`` (None: heap, stack, anonymous)."""
        mapping = self.mapping_at(address)
        if mapping is None or not mapping.path.startswith("/") or mapping.inode == 0:
            return None
        module = self._modules.get(mapping.inode)
        if module is None:
            start = next(
                (m.start for m in self.maps if m.inode == mapping.inode and m.offset == 0),
                mapping.start - mapping.offset,
            )
            path = Path(mapping.path.removesuffix(" (deleted)"))
            try:
                first = elf_info(path).first_load_vaddr
            except BadInput:  # an unreadable library file: named by offset only
                first = 0
            module = Module(path, path.name, mapping.inode, start - first)
            self._modules[mapping.inode] = module
        return module

    def symbols(self, module: Module) -> SymbolTable:
        if module.symbols is None:
            try:
                module.symbols = SymbolTable.load(module.path, debug_root=self.debug_root)
            except BadInput:  # the file is gone or not ELF: no names, addresses still work
                module.symbols = SymbolTable([], str(module.path))
        return module.symbols

    def function_at(self, address: int) -> tuple[Module | None, str | None]:
        """The module and function holding a code address (function None if unnamed)."""
        module = self.module_at(address)
        if module is None:
            return None, None
        found = self.symbols(module).containing(address - module.bias, function=True)
        return module, (found[0].name if found else None)

    def executable(self, address: int) -> bool:
        mapping = self.mapping_at(address)
        return mapping is not None and "x" in mapping.perms
