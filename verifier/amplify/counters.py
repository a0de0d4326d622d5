"""Read the status file that libamplify.so keeps mmapped (``struct amp_status`` in the C).

The file is valid at any moment, also after the process was SIGKILLed. Version 2 adds,
per rule, the last trigger (CLOCK_MONOTONIC ns, tid, code address; also the last one on
the main thread), and two discovery tables: failures of wrapped calls per (function,
errno, main thread or not), and contended mutex acquisitions per (mutex, call site).
Code addresses are absolute; subtract ``load_bias`` for an offset in the executable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from verifier.amplify.spec import INTERPOSABLE, InterposeRule, Rule
from verifier.errors import EnvironmentMissing, HarnessError

MAGIC = b"AMPLIFY\0"
VERSION = 3
_HEADER = struct.Struct("<8sIIiiiIQiI208s")  # 256 bytes
_PAUSED_AT = struct.calcsize("<8sIIiiiIQi")  # the header's ``paused`` word
_RULE = struct.Struct("<IiiIQQQQQqQQQQQQ16x")  # 128 bytes
_MUTED_IN_RULE = struct.calcsize("<Iii")  # the rule's ``muted`` word
_TABLES = struct.Struct("<IIQQQQ24x")  # 64 bytes
_FAIL = struct.Struct("<IIQQQ")  # 32 bytes
_MUTEX = struct.Struct("<QQQQQ8x")  # 48 bytes
MAX_RULES = 16
FAIL_SLOTS = 64
MUTEX_SLOTS = 256
_TABLES_AT = _HEADER.size + MAX_RULES * _RULE.size
SIZE = _TABLES_AT + _TABLES.size + FAIL_SLOTS * _FAIL.size + MUTEX_SLOTS * _MUTEX.size
_KINDS = {0: "none", 1: "watch", 2: "interpose", 3: "lock"}
_LOAD_BIAS_RE = re.compile(r"^amplify: load-bias (0x[0-9a-f]+)$", re.MULTILINE)
GDB_HINT = "use --amplify gdb instead"


@dataclass(frozen=True)
class RuleStatus:
    kind: str  # "watch" or "interpose"
    armed: int  # 1 armed, -1 arming failed, 0 not attempted
    arm_errno: int  # errno of the failed perf_event_open (watch) / dlsym (interpose)
    events: int  # watch: stores trapped; interpose: calls seen (after the thread filter)
    matches: int  # events whose value / result matched the rule
    triggers: int  # matches that slept (after every / max)
    main_triggers: int  # triggers on the main thread
    slept_ns: int
    last_tid: int  # thread that slept last (0: none yet)
    last_ns: int = 0  # CLOCK_MONOTONIC (time.monotonic_ns) when the last trigger began; 0: none
    last_pc: int = 0  # its code address: the trapping RIP (watch), the return address (calls)
    main_last_ns: int = 0  # the same for the last trigger on the main thread
    main_last_pc: int = 0
    first_ns: int = 0  # when the first trigger began
    paused_matches: int = 0  # matches while stretches were paused (not toward every=N)


@dataclass(frozen=True)
class CallFailure:
    """Failures of one wrapped call with one errno on one kind of thread."""

    function: str
    errno_name: str  # e.g. "EMFILE"; "E<n>" for a number Python does not name
    main: bool  # on the main thread (the one that loaded the library)
    count: int
    last_pc: int  # return address of the latest failure
    last_ns: int


@dataclass(frozen=True)
class ContendedMutex:
    """Contended acquisitions of one mutex at one call site (trylock said EBUSY)."""

    mutex: int  # absolute address of the pthread_mutex_t
    site: int  # absolute return address of the pthread_mutex_lock call
    contended: int
    main_contended: int
    wait_ns: int


@dataclass(frozen=True)
class AmplifierStatus:
    pid: int  # process that armed the rules (the child, after a fork)
    main_tid: int
    load_bias: int  # of the main executable
    config_error: int  # 0, or the 1-based index of the rule the library rejected (none active)
    message: str
    crash_signal: int  # caught by the crash reporter, or 0
    rules: tuple[RuleStatus, ...]
    failures: tuple[CallFailure, ...] = ()  # most frequent first
    mutexes: tuple[ContendedMutex, ...] = ()  # most contended first
    failures_dropped: int = 0  # not counted: the table was full
    mutexes_dropped: int = 0
    lock_calls: int = 0  # pthread_mutex_lock calls seen by the lock probe
    lock_contended: int = 0


def _errno_label(number: int) -> str:
    return errno.errorcode.get(number, f"E{number}")


@dataclass(frozen=True)
class _Tables:
    failures: tuple[CallFailure, ...]
    mutexes: tuple[ContendedMutex, ...]
    failures_dropped: int
    mutexes_dropped: int
    lock_calls: int
    lock_contended: int


def _read_tables(data: bytes) -> _Tables:
    """The failure and mutex tables (duplicate mutex slots, possible under a race, merged)."""
    _fs, _ms, fail_dropped, mutex_dropped, lock_calls, lock_contended = _TABLES.unpack_from(
        data, _TABLES_AT
    )
    failures = []
    at = _TABLES_AT + _TABLES.size
    for i in range(FAIL_SLOTS):
        key, _, count, last_pc, last_ns = _FAIL.unpack_from(data, at + i * _FAIL.size)
        if key == 0 or count == 0:
            continue
        key -= 1
        fn, err, main = key >> 16, (key >> 1) & 0x7FFF, bool(key & 1)
        name = INTERPOSABLE[fn] if fn < len(INTERPOSABLE) else f"fn{fn}"
        failures.append(CallFailure(name, _errno_label(err), main, count, last_pc, last_ns))
    merged: dict[tuple[int, int], list[int]] = {}
    at += FAIL_SLOTS * _FAIL.size
    for i in range(MUTEX_SLOTS):
        mutex, site, contended, main_contended, wait_ns = _MUTEX.unpack_from(
            data, at + i * _MUTEX.size
        )
        if mutex == 0 or site == 0 or contended == 0:
            continue
        counts = merged.setdefault((mutex, site), [0, 0, 0])
        counts[0] += contended
        counts[1] += main_contended
        counts[2] += wait_ns
    mutexes = [ContendedMutex(m, s, *c) for (m, s), c in merged.items()]
    return _Tables(
        tuple(sorted(failures, key=lambda f: (-f.count, f.function, f.errno_name))),
        tuple(sorted(mutexes, key=lambda m: (-m.contended, m.mutex, m.site))),
        fail_dropped,
        mutex_dropped,
        lock_calls,
        lock_contended,
    )


def read_status(status_file: Path) -> AmplifierStatus:
    """Decode the status file; HarnessError if the library never started in the process."""
    try:
        data = status_file.read_bytes()
    except FileNotFoundError:
        raise HarnessError(
            f"amplifier status {status_file} missing: the library was not loaded "
            "(LD_PRELOAD ignored for a setuid or static binary?)"
        ) from None
    if len(data) < SIZE or data[:8] != MAGIC:
        raise HarnessError(f"amplifier status {status_file} incomplete (process still starting?)")
    _magic, version, size, pid, main_tid, config_error, nrules, bias, crash, _, msg = (
        _HEADER.unpack_from(data)
    )
    if version != VERSION or size != SIZE or nrules > MAX_RULES:
        raise HarnessError(f"amplifier status {status_file}: version {version}, size {size}")
    tables = _read_tables(data)
    rules = []
    for i in range(nrules):
        kind, armed, arm_errno, _, *counts = _RULE.unpack_from(data, _HEADER.size + i * _RULE.size)
        rules.append(RuleStatus(_KINDS.get(kind, str(kind)), armed, arm_errno, *counts))
    return AmplifierStatus(
        pid=pid,
        main_tid=main_tid,
        load_bias=bias,
        config_error=config_error,
        message=msg.split(b"\0", 1)[0].decode(errors="replace"),
        crash_signal=crash,
        rules=tuple(rules),
        failures=tables.failures,
        mutexes=tables.mutexes,
        failures_dropped=tables.failures_dropped,
        mutexes_dropped=tables.mutexes_dropped,
        lock_calls=tables.lock_calls,
        lock_contended=tables.lock_contended,
    )


def pause_stretches(status_file: Path, paused: bool) -> None:
    """Tell the library in the server to stop (or resume) sleeping on matches: written
    through the file it maps MAP_SHARED, so it sees the word at once. While a failed
    probe is judged, a stall the stretches themselves made (a lock held across a sleep
    by one thread after another) must drain: only a real hang stays hung. A missing or
    unstarted status file is left alone (no library, nothing to pause)."""
    with contextlib.suppress(FileNotFoundError), status_file.open("r+b") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            return
        handle.seek(_PAUSED_AT)
        handle.write(struct.pack("<I", 1 if paused else 0))


def mute_rules(status_file: Path, muted: Sequence[bool]) -> None:
    """Mute (True) or unmute each rule of a running library through its status file:
    a muted rule counts its matches and never sleeps, so auto switches what it stretches
    in a live server without a restart. A missing or unstarted file is left alone."""
    with contextlib.suppress(FileNotFoundError), status_file.open("r+b") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            return
        for i, mute in enumerate(muted[:MAX_RULES]):
            handle.seek(_HEADER.size + i * _RULE.size + _MUTED_IN_RULE)
            handle.write(struct.pack("<I", 1 if mute else 0))


def _arm_hint(err: int) -> str:
    if err in (errno.EACCES, errno.EPERM):
        try:
            level = Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip()
        except OSError:
            level = "?"
        return f"kernel.perf_event_paranoid={level} forbids it (needs <= 2, or CAP_PERFMON)"
    if err in (errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
        return "no hardware breakpoints here (a VM without debug registers?)"
    if err == errno.ENOSPC:
        return "all debug registers are taken (a debugger attached?)"
    if err == errno.EINVAL:
        return "the kernel rejects sigtrap watchpoints (needs Linux >= 5.13)"
    return "perf_event_open failed"


def require_armed(status: AmplifierStatus, rules: Sequence[Rule] | None = None) -> None:
    """Raise if the library rejected the rules or could not arm one of them.

    A watch that could not be armed is an EnvironmentMissing whose one-line message
    suggests ``--amplify gdb``. ``rules`` (as encoded) only improves the message.
    """
    if status.config_error:
        raise HarnessError(f"amplifier library rejected its rules: {status.message}")
    for i, rule in enumerate(status.rules):
        if rule.armed == 1:
            continue
        label = f"rule {i + 1}"
        if rules is not None and i < len(rules):
            given = rules[i]
            label = "|".join(given.functions) if isinstance(given, InterposeRule) else given.symbol
        name = errno.errorcode.get(rule.arm_errno, str(rule.arm_errno))
        if rule.kind == "watch":
            raise EnvironmentMissing(
                f"hardware watchpoint on {label} not armed: perf_event_open: {name} "
                f"({os.strerror(rule.arm_errno)}); {_arm_hint(rule.arm_errno)}; {GDB_HINT}"
            )
        if rule.kind == "lock":
            raise HarnessError(
                f"lock probe for {label} not armed: {name} (no pthread_mutex_trylock?)"
            )
        raise HarnessError(f"interposer for {label} not armed: {name}")


def parse_load_bias(stderr_text: str) -> int | None:
    """The main executable's load bias from the crash reporter's ``amplify: load-bias`` line."""
    match = _LOAD_BIAS_RE.search(stderr_text)
    return int(match.group(1), 16) if match else None


def crash_signal_name(status: AmplifierStatus) -> str | None:
    return signal.Signals(status.crash_signal).name if status.crash_signal else None
