"""Read the status file that libamplify.so keeps mmapped (``struct amp_status`` in the C).

The file is valid at any moment, also after the process was SIGKILLed.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from verifier.amplify.spec import Rule, WatchRule
from verifier.errors import EnvironmentMissing, HarnessError

MAGIC = b"AMPLIFY\0"
VERSION = 1
_HEADER = struct.Struct("<8sIIiiiIQiI208s")  # 256 bytes
_RULE = struct.Struct("<IiiIQQQQQq")  # 64 bytes
MAX_RULES = 16
SIZE = _HEADER.size + MAX_RULES * _RULE.size
_KINDS = {0: "none", 1: "watch", 2: "interpose"}
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


@dataclass(frozen=True)
class AmplifierStatus:
    pid: int  # process that armed the rules (the child, after a fork)
    main_tid: int
    load_bias: int  # of the main executable
    config_error: int  # 0, or the 1-based index of the rule the library rejected (none active)
    message: str
    crash_signal: int  # caught by the crash reporter, or 0
    rules: tuple[RuleStatus, ...]


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
    )


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
            label = given.symbol if isinstance(given, WatchRule) else "|".join(given.functions)
        name = errno.errorcode.get(rule.arm_errno, str(rule.arm_errno))
        if rule.kind == "watch":
            raise EnvironmentMissing(
                f"hardware watchpoint on {label} not armed: perf_event_open: {name} "
                f"({os.strerror(rule.arm_errno)}); {_arm_hint(rule.arm_errno)}; {GDB_HINT}"
            )
        raise HarnessError(f"interposer for {label} not armed: {name}")


def parse_load_bias(stderr_text: str) -> int | None:
    """The main executable's load bias from the crash reporter's ``amplify: load-bias`` line."""
    match = _LOAD_BIAS_RE.search(stderr_text)
    return int(match.group(1), 16) if match else None


def crash_signal_name(status: AmplifierStatus) -> str | None:
    return signal.Signals(status.crash_signal).name if status.crash_signal else None
