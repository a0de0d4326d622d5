"""Gather and save the evidence of a hang (or crash) into the trial's run directory.

Order matters: stats from the held connection first (gdb stops the process), then /proc,
then gdb. The held connection stays open until everything is taken: closing it would
re-enable accepting in the lost wake-up hang and destroy the evidence.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any

from verifier import __version__
from verifier.errors import VerifierError
from verifier.evidence import gdb, procfs
from verifier.evidence.classify import (
    BUILD_SYMBOLS,
    WATCHED_VARIABLES,
    Diagnosis,
    Evidence,
    classify,
)
from verifier.evidence.leaked_lock import condvar_waits
from verifier.evidence.symtab import DEBUG_ROOT, SymbolTable
from verifier.util.atomic import write_json, write_text
from verifier.util.proc import run


def environment() -> dict[str, Any]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "?"

    return {
        "verifier": __version__,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "perf_event_paranoid": read("/proc/sys/kernel/perf_event_paranoid"),
        "ptrace_scope": read("/proc/sys/kernel/yama/ptrace_scope"),
        "euid": os.geteuid(),
    }


def collect_hang(
    pid: int,
    out_dir: Path,
    *,
    held_stats: dict[str, str] | None,
    held_local_port: int | None,
    variables: tuple[str, ...],
    proven: Diagnosis | None = None,
    debug_dir: Path | None = None,
) -> tuple[Diagnosis, Evidence]:
    """Take and save all evidence of a hung server (which keeps running), then classify.

    ``proven``: a diagnosis already proven from the live process (a lock cycle, the lost
    wake-up's state); it stands, and the gdb evidence supplies the hung thread's stack."""
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = procfs.thread_states(pid)
    sockets = procfs.open_sockets(pid)
    fds = procfs.fd_usage(pid)
    wanted = tuple(dict.fromkeys((*WATCHED_VARIABLES, *variables)))
    condvars = _condvar_waits(pid, debug_dir)  # before gdb stops the threads
    dump = gdb.dump(pid, wanted, debug_dir)
    evidence = Evidence(
        pid=pid,
        stacks=dump.threads,
        threads=threads,
        variables=dump.variables,
        sockets=sockets,
        held_stats=held_stats,
        held_local_port=held_local_port,
        fds=fds,
        build_symbols=build_symbols(pid, debug_dir),
    )
    classified = classify(evidence)
    diagnosis = proven.joined_with(classified) if proven else classified
    diagnosis = diagnosis.with_stack(gdb.thread_excerpt(dump.text, diagnosis.hung_tid))
    write_text(out_dir / "backtraces.txt", dump.text)
    write_json(out_dir / "threads.json", procfs.as_jsonable(threads))
    write_json(out_dir / "sockets.json", procfs.as_jsonable(sockets))
    write_json(out_dir / "fds.json", procfs.as_jsonable([fds])[0] if fds else {})
    write_json(out_dir / "held-connection-stats.json", held_stats or {"answer": None})
    write_json(out_dir / "variables.json", dump.variables)
    write_json(out_dir / "condvar-waits.json", condvars)
    write_json(out_dir / "environment.json", environment())
    write_json(out_dir / "diagnosis.json", diagnosis.to_json())
    return diagnosis, evidence


def build_symbols(pid: int, debug_dir: Path | None = None) -> frozenset[str] | None:
    """Which of ``BUILD_SYMBOLS`` the running executable defines (its own symbols, or its
    build-id debug file under ``debug_dir``); None when its symbols cannot be read."""
    try:
        table = SymbolTable.load(Path(f"/proc/{pid}/exe"), debug_root=debug_dir or DEBUG_ROOT)
    except (VerifierError, OSError):
        return None
    return frozenset(name for name in BUILD_SYMBOLS if table.symbol(name) is not None)


def _condvar_waits(pid: int, debug_dir: Path | None) -> list[str]:
    """Threads asleep on a condition variable, named (evidence: no proof nobody signals)."""
    try:
        return condvar_waits(pid, debug_root=debug_dir or DEBUG_ROOT)
    except VerifierError as error:
        return [f"not read: {error.message}"]


_FRAME_RE = re.compile(r"\(\+(0x[0-9a-f]+)\)\[0x[0-9a-f]+\]")


def symbolise_crash(binary: Path, server_log: str, symbols: Path | None = None) -> str:
    """Turn the preload library's crash backtrace into function names and lines.

    Frames of the binary carry their module offset ("memcached(+0x48f8)"); addr2line gets
    offset - 1, since a return address points after its call (and after a noreturn abort).
    """
    start = server_log.rfind("amplify: fatal signal")
    if start < 0:
        return ""
    lines = []
    for line in server_log[start:].splitlines():
        match = _FRAME_RE.search(line)
        if binary.name not in line or not match:
            continue
        offset = int(match[1], 16) - 1
        source = str(symbols or binary)  # a stripped binary's debug file has the lines
        result = run(["addr2line", "-f", "-C", "-i", "-e", source, hex(offset)], timeout_s=10)
        pairs = result.output.split("\n")
        names = [pairs[i].strip() for i in range(0, len(pairs) - 1, 2) if pairs[i].strip()]
        where = pairs[1].rsplit("/", 1)[-1].strip() if len(pairs) > 1 else "?"
        lines.append(f"{' < '.join(names) or '??'} ({where})" if result.ok else line.strip())
    return "\n".join(lines)
