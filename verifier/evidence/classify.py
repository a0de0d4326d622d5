"""Name a hang from its evidence: a ``Diagnosis`` (class, liveness, summary, details).

Pure functions over the collected evidence, so they are unit-tested on recorded dumps.
Classes are ``HangClass`` members: ``self-deadlock``, ``listener-lost-wakeup`` or
``unknown`` from the stacks and state here; a lock cycle proven from the live process
(``deadlock`` / ``self-deadlock``) arrives as a ready diagnosis and wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from verifier.evidence.gdb import Frame, ThreadStack, stack_functions
from verifier.evidence.procfs import FdUsage, SocketInfo, ThreadState
from verifier.vocabulary import HangClass, HangProof, Liveness

FLAG = "allow_new_conns"  # the listener's "accepting" flag (since 1.4.6)
# read on every hang, whatever the scenario: the lost wake-up is recognised by it
WATCHED_VARIABLES = (FLAG,)
# the listener's 10 ms re-enable timer (since 1.4.6; 1.4.5 has neither it nor the flag)
MAXCONNS_TIMER = "maxconns_handler"
# symbols whose presence in the build the diagnosis sentences depend on
BUILD_SYMBOLS = (MAXCONNS_TIMER, *WATCHED_VARIABLES)

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
    # which of BUILD_SYMBOLS this build defines (None: not looked up, so none is named)
    build_symbols: frozenset[str] | None = None

    def has_symbol(self, name: str) -> bool:
        return self.build_symbols is not None and name in self.build_symbols


@dataclass(frozen=True)
class Diagnosis:
    """What a hang's evidence proves: its class, what still answers, and how it was proven."""

    hang_class: HangClass
    liveness: Liveness
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    proof: HangProof = HangProof.TIMING
    hung_tid: int | None = None  # the thread to show (the blocked one; else the listener)
    hung_stack: str = ""  # that thread's backtrace, from the gdb evidence

    @property
    def hung_functions(self) -> frozenset[str]:
        """The functions in the hung thread's frames (empty without gdb evidence)."""
        return stack_functions(self.hung_stack)

    @property
    def bug_key(self) -> str:
        """What two hangs of the same bug share (bisect keeps bugs apart by it)."""
        if self.hang_class == HangClass.SELF_DEADLOCK:
            chain = ">".join(self.details.get("chain", []))
            identity = f"{self.hang_class}:{self.details.get('lock')}:{chain}"
        elif self.hang_class == HangClass.DEADLOCK:
            identity = f"{self.hang_class}:{'+'.join(sorted(self.details.get('locks', [])))}"
        elif self.hang_class == HangClass.LEAKED_LOCK:
            identity = f"{self.hang_class}:{self.details.get('lock')}"
        elif self.hang_class == HangClass.LIVELOCK:
            identity = f"{self.hang_class}:{self.details.get('function', '')}"
        else:
            identity = str(self.hang_class)
        return f"{identity}|{self.liveness}"

    def to_json(self) -> dict[str, Any]:
        return {
            "class": str(self.hang_class),
            "liveness": str(self.liveness),
            "summary": self.summary,
            "details": self.details,
            "proof": str(self.proof),
            "bug_key": self.bug_key,
            "hung_tid": self.hung_tid,
            "hung_stack": self.hung_stack,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnosis:
        return cls(
            HangClass(data["class"]),
            Liveness(data["liveness"]),
            data["summary"],
            dict(data.get("details", {})),
            HangProof(data.get("proof", HangProof.TIMING)),
            data.get("hung_tid"),
            data.get("hung_stack", ""),
        )

    def with_stack(self, stack: str) -> Diagnosis:
        return replace(self, hung_stack=stack)

    def joined_with(self, classified: Diagnosis) -> Diagnosis:
        """A proven diagnosis, completed by what the gdb evidence classified: when both name
        the same class, the stack's details (the re-entered functions of a self-deadlock)
        join the proof's; the proof, its class and its summary stand either way. What still
        answers (liveness) is the evidence's: a proof is taken without asking; but a part
        hung is proven by what still answered, which the evidence cannot tell apart from a
        dead listener."""
        if classified.hang_class != self.hang_class:
            return replace(
                self,
                liveness=self.liveness
                if self.liveness == Liveness.PART_STUCK
                else classified.liveness,
                details={**self.details, "gdb_classified": classified.summary},
            )
        chain = classified.details.get("chain")
        summary = self.summary + (f" in {' -> '.join(chain)}" if chain else "")
        return replace(
            self,
            liveness=classified.liveness,
            summary=summary,
            details={**classified.details, **self.details},
        )


def liveness(held_stats: dict[str, str] | None) -> Liveness:
    return Liveness.WORKERS_ALIVE if held_stats is not None else Liveness.FROZEN


def _program_function(name: str) -> bool:
    """A function of the program itself: not libc's, and not a lock wrapper (the auto
    amplifier's interposed pthread_mutex_lock sits between the caller and libc's)."""
    return name != "??" and not name.startswith(_LIB_PREFIX) and not _LOCK_FRAME.search(name)


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


def lost_wakeup_sentence(evidence: Evidence, flag: str | None, accepting: str | None) -> str:
    """The lost wake-up in this build's terms: the timer only if the build has it, and only
    the values read (a variable this version lacks or gdb could not read is left out)."""
    if evidence.has_symbol(MAXCONNS_TIMER):
        head = "listener polls its 10 ms maxconns timer forever"
    else:
        head = "listener sleeps in its event loop forever with accepting off"
    pairs = ((FLAG, flag), ("accepting_conns", accepting))
    values = [f"{name}={value}" for name, value in pairs if value is not None]
    shown = f": {', '.join(values)}," if values else ","
    return f"{head}{shown} no client connection left that could re-enable accepting"


def classify(evidence: Evidence) -> Diagnosis:
    alive = liveness(evidence.held_stats)
    deadlock = find_self_deadlock(evidence.stacks)
    if deadlock:
        chain = " -> ".join(deadlock["chain"])
        return Diagnosis(
            HangClass.SELF_DEADLOCK,
            alive,
            f"thread {deadlock['thread']} ({deadlock['thread_name']}) blocks on "
            f"{deadlock['lock']} it already holds: {chain} -> pthread_mutex_lock",
            deadlock,
            hung_tid=deadlock["lwp"],
        )
    waiting_on_lock = any(_LOCK_FRAME.search(f.function) for s in evidence.stacks for f in s.frames)
    flag = evidence.variables.get(FLAG)
    accepting = (evidence.held_stats or {}).get("accepting_conns")
    clients = _client_sockets(evidence)
    if evidence.fds is not None and evidence.fds.exhausted:
        # Every descriptor is taken (the held connection may be the last one): accept() and
        # any re-check must fail. That is a full server, not a lost wake-up.
        return Diagnosis(
            HangClass.UNKNOWN,
            alive,
            f"every file descriptor is in use ({evidence.fds.open} of {evidence.fds.limit}): "
            "the server is full, so nothing can be accepted; raise -c or hold fewer connections",
            {"open_fds": evidence.fds.open, "fd_limit": evidence.fds.limit},
            hung_tid=evidence.pid,
        )
    if (
        _main_thread_polling(evidence)
        and not waiting_on_lock
        and flag in ("0", "false", None)
        and accepting in ("0", None)
        and (flag is not None or accepting is not None)
        and not clients
    ):
        read = {FLAG: flag, "accepting_conns": accepting}
        details: dict[str, Any] = {k: v for k, v in read.items() if v is not None}
        details["client_sockets"] = 0
        return Diagnosis(
            HangClass.LOST_WAKEUP,
            alive,
            lost_wakeup_sentence(evidence, flag, accepting),
            details,
            hung_tid=evidence.pid,
        )
    return Diagnosis(
        HangClass.UNKNOWN,
        alive,
        "no known signature; raw evidence kept",
        {
            "waiting_on_lock": waiting_on_lock,
            "allow_new_conns": flag,
            "accepting_conns": accepting,
            "client_sockets": len(clients),
        },
        hung_tid=evidence.pid,
    )
