"""What a thread asleep in ``futex`` waits for: a glibc mutex (with its owner), or not.

A futex word is only a 32-bit integer; condition variables, semaphores, barriers, joins,
rwlocks and libc's own locks sleep on one too. Only a mutex wait is an edge of the
wait-for graph, so a wait counts as one only when three independent things agree:

1. the waiting code: the thread's pc and the return addresses on its stack, resolved in
   libc, are a mutex-lock path (``__lll_lock_wait`` called from ``pthread_mutex_lock``).
   Debian's libc exports only ``pthread_mutex_lock``; ``__lll_lock_wait`` is a local
   symbol, named only by libc's debug file (``libc6-dbg``, found by build-id). Without
   it the first named caller decides (measured on glibc 2.36: the word at sp is the
   return address into ``pthread_mutex_lock``);
2. the syscall: ``FUTEX_WAIT`` for the value 2 (glibc's "locked, with waiters"), or
   ``FUTEX_LOCK_PI`` for a priority-inheritance mutex; condition variables, semaphores
   and joins use ``FUTEX_WAIT_BITSET``;
3. the memory, as ``struct __pthread_mutex_s`` (x86-64, glibc 2.36): ``__lock`` at 0
   shows a waiter (2, or the FUTEX_WAITERS bit), ``__owner`` at 8 is a live thread of this
   process (for robust and PI mutexes the owner is ``__lock & FUTEX_TID_MASK``), and
   ``__kind`` at 16 is a valid kind.

Everything else is listed with the reason it is not an edge. Kinds: normal, adaptive,
error-checking and recursive mutexes wait the same way (``__lll_lock_wait``) and are
handled; robust and PI mutexes are handled; priority-protect mutexes are reported as not
understood; a timed lock (``pthread_mutex_timedlock``) is not an edge, it times out.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, replace

from verifier.evidence.memory import Module, ProcessImage, ProcessMemory, ThreadSample

FUTEX_WAIT, FUTEX_LOCK_PI, FUTEX_WAIT_BITSET, FUTEX_LOCK_PI2 = 0, 6, 9, 13
_FUTEX_CMD = 0x7F  # op without FUTEX_PRIVATE_FLAG (128) and FUTEX_CLOCK_REALTIME (256)
FUTEX_TID_MASK, FUTEX_WAITERS = 0x3FFFFFFF, 0x80000000
LOCKED_WITH_WAITERS = 2  # what __lll_lock_wait waits for

# __kind bits (glibc pthreadP.h)
KIND_TYPE_MASK, KIND_ROBUST, KIND_PI, KIND_PP, KIND_PSHARED = 3, 16, 32, 64, 128
_KIND_KNOWN = KIND_TYPE_MASK | KIND_ROBUST | KIND_PI | KIND_PP | KIND_PSHARED | 256 | 512
_TYPE_NAMES = ("normal", "recursive", "errorcheck", "adaptive")
MUTEX_SIZE = 40  # sizeof(pthread_mutex_t) on x86-64

_STACK_WORDS = 96  # how far above sp to look for return addresses (768 bytes)
_MAX_FRAMES = 6
_CALLEE_SPAN = 0x10000  # a direct call's target lies this close to the frame below it
_PARK_SPAN = 0x1000  # glibc parks a PI-deadlocked thread on a local variable this near sp


class WaitKind(enum.StrEnum):
    MUTEX = "mutex"  # the only edge of the wait-for graph
    TIMED_MUTEX = "timed mutex lock"
    CONDVAR = "condition variable"
    SEMAPHORE = "semaphore"
    BARRIER = "barrier"
    RWLOCK = "rwlock"
    JOIN = "thread join"
    LIBC_LOCK = "libc internal lock"
    UNKNOWN = "unknown futex"


# glibc functions (exported or local) and the kind of wait they mean, innermost first.
_EXACT = {
    "__lll_lock_wait_private": WaitKind.LIBC_LOCK,
    "__lll_lock_wait": WaitKind.MUTEX,
    "__pthread_mutex_lock_full": WaitKind.MUTEX,
    "___pthread_mutex_lock": WaitKind.MUTEX,
    "__pthread_mutex_lock": WaitKind.MUTEX,
    "pthread_mutex_lock": WaitKind.MUTEX,
    "__pthread_mutex_cond_lock": WaitKind.MUTEX,
    "__pthread_mutex_cond_lock_full": WaitKind.MUTEX,
    "__lll_clocklock_wait": WaitKind.TIMED_MUTEX,
    "__pthread_mutex_clocklock_common": WaitKind.TIMED_MUTEX,
    "__pthread_mutex_clocklock64": WaitKind.TIMED_MUTEX,
    "__pthread_mutex_timedlock64": WaitKind.TIMED_MUTEX,
    "pthread_mutex_clocklock": WaitKind.TIMED_MUTEX,
    "pthread_mutex_timedlock": WaitKind.TIMED_MUTEX,
    "__pthread_clockjoin_ex": WaitKind.JOIN,
}
_PREFIXES = (
    ("pthread_cond_", WaitKind.CONDVAR),
    ("__pthread_cond_", WaitKind.CONDVAR),
    ("___pthread_cond_", WaitKind.CONDVAR),
    ("__condvar_", WaitKind.CONDVAR),
    ("sem_", WaitKind.SEMAPHORE),
    ("__new_sem_", WaitKind.SEMAPHORE),
    ("__old_sem_", WaitKind.SEMAPHORE),
    ("do_futex_wait", WaitKind.SEMAPHORE),
    ("pthread_barrier_", WaitKind.BARRIER),
    ("___pthread_barrier_", WaitKind.BARRIER),
    ("pthread_rwlock_", WaitKind.RWLOCK),
    ("__pthread_rwlock_", WaitKind.RWLOCK),
    ("pthread_join", WaitKind.JOIN),
    ("pthread_clockjoin", WaitKind.JOIN),
    ("pthread_timedjoin", WaitKind.JOIN),
    ("___pthread_join", WaitKind.JOIN),
)


def wait_kind_of(function: str) -> WaitKind | None:
    """The kind of wait a glibc function name stands for (None: generic or unknown)."""
    name = function.removeprefix("__GI_")
    if name in _EXACT:
        return _EXACT[name]
    return next((kind for prefix, kind in _PREFIXES if name.startswith(prefix)), None)


@dataclass(frozen=True)
class Frame:
    address: int
    module: str  # file name, "" if not in a file
    offset: int  # link-time address in the module
    function: str | None

    def label(self) -> str:
        return self.function or (f"{self.module}+{self.offset:#x}" if self.module else "??")


def _frame(image: ProcessImage, address: int) -> Frame:
    module, function = image.function_at(address)
    if module is None:
        return Frame(address, "", address, None)
    return Frame(address, module.name, address - module.bias, function)


@dataclass(frozen=True)
class MutexState:
    """``struct __pthread_mutex_s`` as read from the process (x86-64)."""

    lock: int
    count: int
    owner_field: int
    nusers: int
    kind: int

    @classmethod
    def parse(cls, data: bytes) -> MutexState:
        return cls(*struct.unpack_from("<iIiIi", data))

    @property
    def valid_kind(self) -> bool:
        return self.kind >= 0 and not self.kind & ~_KIND_KNOWN

    @property
    def robust(self) -> bool:
        return bool(self.kind & KIND_ROBUST)

    @property
    def pi(self) -> bool:
        return bool(self.kind & KIND_PI)

    @property
    def pp(self) -> bool:
        return bool(self.kind & KIND_PP)

    @property
    def owner(self) -> int:
        """The owner's TID: in the lock word for robust and PI mutexes, else ``__owner``."""
        if self.robust or self.pi:
            return (self.lock & 0xFFFFFFFF) & FUTEX_TID_MASK
        return self.owner_field

    def describe_kind(self) -> str:
        words = [_TYPE_NAMES[self.kind & KIND_TYPE_MASK]]
        words += [n for bit, n in ((KIND_ROBUST, "robust"), (KIND_PI, "pi"), (KIND_PP, "pp"))
                  if self.kind & bit]  # fmt: skip
        return " ".join(words)


@dataclass(frozen=True)
class FutexWait:
    """One thread asleep in futex: what it waits for, and the owner if it is a mutex."""

    tid: int
    thread_name: str
    futex: int  # the futex word's address (a mutex's address: __lock is at offset 0)
    op: int
    expected: int
    kind: WaitKind
    code: tuple[Frame, ...]  # pc first, then return addresses found on the stack
    reason: str  # one line: why this is (or is not) an edge
    owner: int | None = None
    mutex: MutexState | None = None

    @property
    def is_edge(self) -> bool:
        return self.kind is WaitKind.MUTEX and self.owner is not None

    def code_text(self) -> str:
        return " <- ".join(frame.label() for frame in self.code)

    def describe(self) -> str:
        who = f"thread {self.tid} ({self.thread_name})"
        return f"{who} waits on futex {self.futex:#x}: {self.reason}"

    def to_json(self) -> dict[str, object]:
        return {
            "tid": self.tid,
            "thread": self.thread_name,
            "futex": f"{self.futex:#x}",
            "op": self.op,
            "expected": self.expected,
            "kind": str(self.kind),
            "edge": self.is_edge,
            "owner": self.owner,
            "mutex_kind": self.mutex.describe_kind() if self.mutex else None,
            "code": [frame.label() for frame in self.code],
            "reason": self.reason,
        }


def _libc_like(module: Module | None, image: ProcessImage) -> bool:
    if module is None:
        return False
    if module.name.startswith(("libc.so", "libc-", "libpthread")):
        return True
    return module is image.exe and not any("/libc" in m.path for m in image.maps)  # static


def _is_call_site(before: bytes) -> bool:
    """Do the bytes just before a return address end with a call instruction?"""
    return (
        before[-5] == 0xE8  # call rel32
        or (before[-6] == 0xFF and before[-5] == 0x15)  # call *disp32(%rip)
        or (before[-2] == 0xFF and 0xD0 <= before[-1] <= 0xD7)  # call *%reg
        or (before[-3] == 0x41 and before[-2] == 0xFF and 0xD0 <= before[-1] <= 0xD7)
        or (before[-3] == 0xFF and 0x50 <= before[-2] <= 0x57)  # call *disp8(%reg)
        or (before[-6] == 0xFF and 0x90 <= before[-5] <= 0x97)  # call *disp32(%reg)
    )


def call_chain(image: ProcessImage, mem: ProcessMemory, sample: ThreadSample) -> Iterator[Frame]:
    """The pc's function, then the functions of return addresses found above sp (lazily).

    Without frame pointers there is no exact unwinding; a word counts as a return address
    only if it points into code right after a call instruction, and a direct call must
    target a function near a frame already found (tail calls allowed), or a PLT stub in
    the caller's file. Stale return addresses can still slip in, so the wait kind is
    taken from the innermost libc frame that names one; the rest is a hint for the reader.
    """
    frames = [_frame(image, sample.pc)]
    yield frames[0]
    for word in mem.read_words(sample.sp, _STACK_WORDS):
        if word < 8 or not image.executable(word):
            continue
        before = mem.read(word - 7, 7)
        if before is None or not _is_call_site(before):
            continue
        if before[-5] == 0xE8:
            target = word + struct.unpack("<i", before[-4:])[0]
            caller_module = image.module_at(word)
            target_module = image.module_at(target)
            # the callee is near a frame already found, in the same file (not always at or
            # before it: glibc's __futex_abstimed_wait_cancelable64 tail-calls a function
            # 0x120 bytes lower), or the call went through a PLT stub of the caller's file.
            # Any frame, not only the last: a stale return address left in a frame must
            # not hide the real one above it (seen: clock_nanosleep's, from an old usleep)
            if not any(
                (target_module is below_module and abs(below - target) < _CALLEE_SPAN)
                or (target_module is caller_module and target_module is not below_module)
                for below, below_module in ((f.address, image.module_at(f.address)) for f in frames)
            ):
                continue
        frames.append(_frame(image, word))
        yield frames[-1]


def _waiting_code(
    image: ProcessImage, mem: ProcessMemory, sample: ThreadSample
) -> tuple[list[Frame], WaitKind | None]:
    """The frames up to the first one in the program after the libc frame that names the
    wait kind (the call site: enough for the reader, and it saves reads), and that kind."""
    frames: list[Frame] = []
    family: WaitKind | None = None
    for frame in call_chain(image, mem, sample):
        frames.append(frame)
        libc = _libc_like(image.module_at(frame.address), image)
        if family is None and libc and frame.function:
            family = wait_kind_of(frame.function)
        if (family is not None and not libc) or len(frames) >= _MAX_FRAMES:
            break
    return frames, family


def classify_wait(
    image: ProcessImage,
    mem: ProcessMemory,
    sample: ThreadSample,
    live_tids: Collection[int],
) -> FutexWait:
    """Decide what ``sample`` (a thread asleep in futex) waits for."""
    futex, op = sample.args[0], sample.args[1]
    expected = sample.args[2] & 0xFFFFFFFF
    timeout = sample.args[3]
    command = op & _FUTEX_CMD
    code, family = _waiting_code(image, mem, sample)

    def result(
        kind: WaitKind, reason: str, owner: int | None = None, mutex: MutexState | None = None
    ) -> FutexWait:
        return FutexWait(
            sample.tid, sample.name, futex, op, expected, kind, tuple(code), reason, owner, mutex
        )

    if command in (FUTEX_LOCK_PI, FUTEX_LOCK_PI2):
        if timeout:
            return result(WaitKind.TIMED_MUTEX, "not an edge: timed lock of a PI mutex")
        return _mutex_wait(result, mem, futex, live_tids, "priority-inheritance mutex")
    if family is WaitKind.MUTEX and command == FUTEX_WAIT and not timeout:
        return _mutex_wait(result, mem, futex, live_tids, "mutex")
    if family is WaitKind.CONDVAR and command == FUTEX_WAIT and expected == LOCKED_WITH_WAITERS:
        # pthread_cond_wait re-taking its mutex after the wake-up: a mutex wait
        return _mutex_wait(result, mem, futex, live_tids, "condition variable's mutex")
    if (
        family is WaitKind.MUTEX
        and command == FUTEX_WAIT_BITSET
        and expected == 0
        and sample.sp <= futex < sample.sp + _PARK_SPAN
    ):
        return _parked_after_pi_deadlock(result, mem, sample, live_tids)
    if family is None and command == FUTEX_WAIT and not timeout:
        robust = _robust_fingerprint(mem, futex, expected, live_tids)
        if robust is not None:
            return _mutex_wait(result, mem, futex, live_tids, "robust mutex")
    if family is None:
        where = code[0].label()
        return result(WaitKind.UNKNOWN, f"not understood: futex op {op:#x} from {where}")
    if family is WaitKind.MUTEX:
        return result(WaitKind.UNKNOWN, f"not understood: mutex code with futex op {op:#x}")
    return result(family, f"not a mutex ({family})")


_Result = Callable[..., FutexWait]  # classify_wait's result(kind, reason, owner, mutex)


def _robust_fingerprint(
    mem: ProcessMemory, futex: int, expected: int, live_tids: Collection[int]
) -> MutexState | None:
    """A robust mutex waited for without a named libc frame (tail-called lock path): the
    waited value, the lock word and ``__owner`` all name the same live thread."""
    data = mem.read(futex, 20)
    if data is None:
        return None
    state = MutexState.parse(data)
    owner = expected & FUTEX_TID_MASK
    if (
        state.valid_kind
        and state.robust
        and owner in live_tids
        and (state.lock & 0xFFFFFFFF) == expected
        and state.owner_field == owner
    ):
        return state
    return None


def _mutex_wait(
    result: _Result, mem: ProcessMemory, futex: int, live_tids: Collection[int], what: str
) -> FutexWait:
    data = mem.read(futex, 20)
    if data is None:
        return result(WaitKind.UNKNOWN, f"not understood: {what} at an unreadable address")
    state = MutexState.parse(data)
    if not state.valid_kind:
        return result(WaitKind.UNKNOWN, f"not understood: __kind {state.kind:#x} is no mutex kind")
    if state.pp:
        return result(
            WaitKind.UNKNOWN, "not understood: priority-protect mutex (not handled)", mutex=state
        )
    # a sleeping waiter has marked the lock word: 2 ("locked, waiters"), or FUTEX_WAITERS
    # for robust and PI mutexes (the lock word holds the owner's TID)
    contended = (
        bool(state.lock & FUTEX_WAITERS)
        if state.robust or state.pi
        else state.lock == LOCKED_WITH_WAITERS
    )
    if not contended:
        return result(
            WaitKind.UNKNOWN,
            f"{what} shows no waiter (lock word {state.lock & 0xFFFFFFFF:#x}): being woken",
        )
    owner = state.owner
    if owner == 0:
        return result(WaitKind.UNKNOWN, f"{what} is locked but records no owner yet")
    if owner not in live_tids:
        return result(
            WaitKind.UNKNOWN,
            f"{what} owner {owner} is no thread of this process (it exited holding it?)",
            mutex=state,
        )
    return result(
        WaitKind.MUTEX,
        f"{state.describe_kind()} {what}, owner {owner}",
        owner=owner,
        mutex=state,
    )


def _parked_after_pi_deadlock(
    result: _Result, mem: ProcessMemory, sample: ThreadSample, live_tids: Collection[int]
) -> FutexWait:
    """glibc's answer to FUTEX_LOCK_PI failing with EDEADLK (the kernel found the PI chain
    looping back to this thread): wait forever on a zero on its own stack. The mutex it
    asked for is not in the syscall; it is the one PI mutex pointed to from the stack that
    another live thread owns (or, for a self-deadlock, the only one, owned by itself)."""
    candidates: dict[int, MutexState] = {}
    for word in mem.read_words(sample.sp, _STACK_WORDS):
        if word in candidates or word % 4 or word < 0x1000:
            continue
        data = mem.read(word, 20)
        if data is None:
            continue
        state = MutexState.parse(data)
        if state.valid_kind and state.pi and state.owner in live_tids:
            candidates[word] = state
    others = [a for a, m in candidates.items() if m.owner != sample.tid]
    chosen = others if others else list(candidates)
    if len(chosen) != 1:
        return result(
            WaitKind.UNKNOWN,
            "parked forever after the kernel reported a PI-mutex deadlock (EDEADLK); "
            f"{len(chosen)} candidate mutexes on its stack, so the one it wanted is not known",
        )
    address, state = chosen[0], candidates[chosen[0]]
    return replace(
        result(
            WaitKind.MUTEX,
            f"{state.describe_kind()} mutex, owner {state.owner}: the kernel reported a "
            "deadlock (EDEADLK) and glibc parked the thread forever",
            owner=state.owner,
            mutex=state,
        ),
        futex=address,
    )
