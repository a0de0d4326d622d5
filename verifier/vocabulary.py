"""One vocabulary: every state a stage reports to the next, as ``StrEnum`` members.

The values are what reports, state files and the README show; code compares members,
never message text. Each name has one meaning:

- a *trial outcome* is what one soak saw (hang, crash, clean, error);
- a *verdict kind* is what verify concludes over its trials (HANG, PASS, ...);
- a *hang class* names the bug a hang's evidence proves (self-deadlock, ...);
- a *hang proof* says how a hang was established (a lock cycle, the process state, or
  timing alone);
- an *observation kind* is what bisect records for one commit; a *skip cause* why a
  commit told nothing.
"""

from __future__ import annotations

import enum


class TrialOutcome(enum.StrEnum):
    HANG = "hang"
    CRASH = "crash"
    CLEAN = "clean"
    WRONG = "wrong"  # the checker proved an answer no order of the operations explains
    ERROR = "error"  # the harness could not run the trial (no verdict)


class VerdictKind(enum.StrEnum):
    HANG = "HANG"
    CRASH = "CRASH"
    WRONG = "WRONG RESULT"  # the clients saw answers no order of their operations explains
    PASS = "PASS"  # always a bound, never bare
    INCONCLUSIVE = "INCONCLUSIVE"  # the bug path was never exercised
    NOT_APPLICABLE = "NOT APPLICABLE"  # the build lacks the scenario's code
    ERROR = "ERROR"


class HangClass(enum.StrEnum):
    SELF_DEADLOCK = "self-deadlock"  # one thread waits for a lock it holds
    DEADLOCK = "deadlock"  # a cycle of two or more threads waiting for each other's locks
    LOST_WAKEUP = "listener-lost-wakeup"  # accepting disabled, nobody left to enable it
    LEAKED_LOCK = "leaked-lock"  # a mutex held by a thread that waits on nothing, others wait
    LIVELOCK = "livelock"  # a thread on CPU at the same code across samples, no progress
    STUCK_PROGRESS = "stuck-progress"  # background work pending, its counters frozen
    STUCK_SHUTDOWN = "stuck-shutdown"  # asked to stop (signal or command), never exited
    PART_HUNG = "part-hung"  # one operation or one worker stopped answering, stats still does
    UNKNOWN = "unknown"  # no known shape; raw evidence kept


class HangProof(enum.StrEnum):
    CYCLE = "cycle"  # a cycle in the wait-for graph read from the live process
    STATE = "state"  # the process state rules out any wake-up (lost wake-up)
    TIMING = "timing"  # only silence: fresh probes unanswered for the confirmation window
    OWNER = "owner"  # a mutex's owner read across snapshots: alive, waiting on nothing for it
    SPIN = "spin"  # a thread on CPU at the same code across samples, progress counters frozen
    PROGRESS = "progress"  # pending work whose counters did not move for the bound
    EXIT = "exit"  # the process did not exit within the shutdown bound
    SOCKET = "socket"  # a connection's requests all read (queues empty), none answered, others were


class Liveness(enum.StrEnum):
    WORKERS_ALIVE = "listener dead, workers alive"
    PART_STUCK = "server answering, one part stuck"  # part-hung: the probes were answered
    FROZEN = "whole server frozen"
    UNKNOWN = "no held connection"


class WrongClass(enum.StrEnum):
    """What a WRONG RESULT's witness shows (the checker names it from the operations)."""

    LOST_UPDATE = "lost-update"  # two updates answered as if only one had happened
    LOST_DELETE = "lost-delete"  # a key read back after a delete with no store in between
    STALE_READ = "stale-read"  # a read of a value some later-finished write replaced
    CAS_CHANGED = "cas-changed"  # a cas token that changed with no write in between
    DOUBLE_CREATE = "double-create"  # two creations of one missing key both succeeded
    IMPOSSIBLE_VALUE = "impossible-value"  # a value no write (or sum of deltas) produced
    NOT_LINEARIZABLE = "not-linearizable"  # no order explains the answers (no simpler name)


class CheckOutcome(enum.StrEnum):
    """What the linearizability checker concludes for one key or a whole history."""

    OK = "ok"  # some order of the operations explains every answer
    VIOLATION = "violation"  # proven: no order does (a witness is given)
    UNKNOWN = "unknown"  # the time budget ran out before either was shown


class Sanitizer(enum.StrEnum):
    """A compiler sanitizer a build can carry (``--sanitize``)."""

    ADDRESS = "address"  # ASan: use-after-free, overflows; the process dies at the first
    THREAD = "thread"  # TSan: data races, lock-order inversions; reports and runs on
    UNDEFINED = "undefined"  # UBSan: signed overflow, misaligned loads, ...


class AmplifierKind(enum.StrEnum):
    WATCH = "watch"
    INTERPOSE = "interpose"
    GDB = "gdb"
    AUTO = "auto"
    NONE = "none"


class ObservationKind(enum.StrEnum):
    """What one soak of one commit tells the bisector."""

    HANG = "hang"  # this bug hung: proof the commit is bad
    CLEAN = "clean"  # no hang in the soak: evidence weighted by its length
    OTHER_BUG = "other-bug"  # another bug hung (or crashed): listed, never evidence
    SKIP = "skip"  # nothing learned (see SkipCause)


class SkipCause(enum.StrEnum):
    DOES_NOT_BUILD = "does not build"
    NOT_APPLICABLE = "not applicable"  # the commit lacks the scenario's code
    PATCH_DOES_NOT_APPLY = "patch does not apply"
    NO_RECIPE = "no build recipe"
    NO_EXPOSURE = "no exposure"  # the flood never reached the bug path (no EMFILE)


class ProbeClient(enum.StrEnum):
    AUTO = "auto"
    TELNET = "telnet"
    SOCKET = "socket"


class BugApplicability(enum.StrEnum):
    """Whether a known bug can be in a build, decided before soaking (``verifier known-bugs``)."""

    APPLICABLE = "applicable"  # the build is in the bug's range: soaked
    PATCHED = "patched code"  # the version has the fix, but a given patch touches its code: soaked
    FIXED = "fixed in this version"  # the fix commit is an ancestor, or the version is past it
    NOT_YET = "not yet introduced"  # older than the commit (or release) that brought the bug
    NO_FEATURE = "feature not built"  # needs TLS, extstore, ... which this build lacks
    NO_RUNNER = "no runner yet"  # a workload with no scenario file that runs it


class FeaturePresence(enum.StrEnum):
    """Whether a build has a command family or option (verifier/stress/features.py)."""

    PRESENT = "present"
    ABSENT = "absent"
    UNKNOWN = "unknown"  # its only evidence is unreadable (a stripped binary's symbols)
