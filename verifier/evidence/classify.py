"""Name a hang from its evidence: ``self-deadlock``, ``listener-lost-wakeup`` or ``unknown``.

Pure functions over the collected evidence, so they are unit-tested on recorded dumps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from verifier.evidence.gdb import Frame, ThreadStack
from verifier.evidence.procfs import FdUsage, SocketInfo, ThreadState

SELF_DEADLOCK = "self-deadlock"
LOST_WAKEUP = "listener-lost-wakeup"
UNKNOWN = "unknown"
CLASSES = (SELF_DEADLOCK, LOST_WAKEUP, UNKNOWN)
# read on every hang, whatever the scenario: the classes above are recognised by them
SIGNATURE_VARIABLES = ("allow_new_conns",)

WORKERS_ALIVE = "listener dead, workers alive"
FROZEN = "whole server frozen"
LIVENESS_UNKNOWN = "no held connection"

_LOCK_FRAME = re.compile(r"pthread_mutex_lock|lll_lock_wait|__lll_lock")
_POLL_CALLS = ("epoll_wait", "epoll_pwait", "epoll_pwait2")
_LIB_PREFIX = ("__", "_IO", "start_thread", "clone")


@dataclass(frozen=True)
class Evidence:
    """Everything a classifier may look at (parts may be missing)."""

    pid: int
    stacks: list[ThreadStack]
    threads: list[ThreadState]
    variables: dict[str, str]
    sockets: list[SocketInfo]
    held_stats: dict[str, str] | None  # None: the held connection gave no answer
    held_local_port: int | None = None
    fds: FdUsage | None = None


@dataclass(frozen=True)
class Signature:
    hang_class: str
    liveness: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """What two hangs of the same bug share (used by bisect to keep bugs apart)."""
        if self.hang_class == SELF_DEADLOCK:
            chain = ">".join(self.details.get("chain", []))
            return f"{SELF_DEADLOCK}:{self.details.get('lock')}:{chain}"
        return self.hang_class


def liveness(held_stats: dict[str, str] | None, had_held: bool = True) -> str:
    if not had_held:
        return LIVENESS_UNKNOWN
    return WORKERS_ALIVE if held_stats is not None else FROZEN


def _program_function(name: str) -> bool:
    return name != "??" and not name.startswith(_LIB_PREFIX)


def find_self_deadlock(stacks: list[ThreadStack]) -> dict[str, Any] | None:
    """A thread blocked on a mutex with some function twice on its stack above the lock."""
    for stack in stacks:
        lock_at = next(
            (i for i, f in enumerate(stack.frames) if _LOCK_FRAME.search(f.function)), None
        )
        if lock_at is None:
            continue
        callers: list[Frame] = []
        for frame in stack.frames[lock_at + 1 :]:
            # an inlined or tail-called function can show twice in a row: one call, not two
            if _program_function(frame.function) and (
                not callers or callers[-1].function != frame.function
            ):
                callers.append(frame)
        names = [f.function for f in callers]
        repeated = next((n for n in names if names.count(n) > 1), None)
        if repeated is None:
            continue
        first = names.index(repeated)
        last = len(names) - 1 - names[::-1].index(repeated)
        chain = [
            f"{f.function}({f.args})" if f.args else f.function for f in callers[first : last + 1]
        ]
        lock_args = " ".join(f.args for f in stack.frames[: lock_at + 1])
        lock_name = re.search(r"<([\w.+]+)>", lock_args)
        return {
            "thread": stack.number,
            "lwp": stack.lwp,
            "thread_name": stack.name,
            "lock": lock_name[1] if lock_name else "unknown mutex",
            "function": repeated,
            "chain": list(reversed([c.split("(")[0] for c in chain])),
            "frames": list(reversed(chain)),
        }
    return None


def _main_thread_polling(evidence: Evidence) -> bool:
    main_stack = next((s for s in evidence.stacks if s.lwp == evidence.pid), None)
    if main_stack and main_stack.frames:
        return any(call in main_stack.frames[0].function for call in _POLL_CALLS)
    main_state = next((t for t in evidence.threads if t.tid == evidence.pid), None)
    return bool(main_state and main_state.syscall in _POLL_CALLS)


def _client_sockets(evidence: Evidence) -> list[SocketInfo]:
    held = f":{evidence.held_local_port}" if evidence.held_local_port else None
    return [
        s
        for s in evidence.sockets
        if s.state != "LISTEN" and not (held and s.remote.endswith(held))
    ]


def classify(evidence: Evidence, had_held: bool = True) -> Signature:
    alive = liveness(evidence.held_stats, had_held)
    deadlock = find_self_deadlock(evidence.stacks)
    if deadlock:
        chain = " -> ".join(deadlock["chain"])
        return Signature(
            SELF_DEADLOCK,
            alive,
            f"thread {deadlock['thread']} ({deadlock['thread_name']}) blocks on "
            f"{deadlock['lock']} it already holds: {chain} -> pthread_mutex_lock",
            deadlock,
        )
    waiting_on_lock = any(_LOCK_FRAME.search(f.function) for s in evidence.stacks for f in s.frames)
    flag = evidence.variables.get("allow_new_conns")
    accepting = (evidence.held_stats or {}).get("accepting_conns")
    clients = _client_sockets(evidence)
    if evidence.fds is not None and evidence.fds.exhausted:
        # Every descriptor is taken (the held connection may be the last one): accept() and
        # any re-check must fail. That is a full server, not a lost wake-up.
        return Signature(
            UNKNOWN,
            alive,
            f"every file descriptor is in use ({evidence.fds.open} of {evidence.fds.limit}): "
            "the server is full, so nothing can be accepted; raise -c or hold fewer connections",
            {"open_fds": evidence.fds.open, "fd_limit": evidence.fds.limit},
        )
    if (
        _main_thread_polling(evidence)
        and not waiting_on_lock
        and flag in ("0", "false", None)
        and accepting in ("0", None)
        and (flag is not None or accepting is not None)
        and not clients
    ):
        return Signature(
            LOST_WAKEUP,
            alive,
            "listener polls its 10 ms maxconns timer forever: allow_new_conns="
            f"{flag if flag is not None else '?'}, accepting_conns={accepting or '?'}, "
            "no client connection left that could re-enable accepting",
            {"allow_new_conns": flag, "accepting_conns": accepting, "client_sockets": 0},
        )
    return Signature(
        UNKNOWN,
        alive,
        "no known signature; raw evidence kept",
        {
            "waiting_on_lock": waiting_on_lock,
            "allow_new_conns": flag,
            "accepting_conns": accepting,
            "client_sockets": len(clients),
        },
    )
