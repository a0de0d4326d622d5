"""Turn SIGTERM/SIGHUP into an exception, but never inside logging's own lock handling.

Raising from a signal handler is how Ctrl-C works: every ``finally`` runs, so servers and
floods are stopped by pid. But the exception lands on whatever bytecode runs next. Each
``subprocess`` start with a ``preexec_fn`` forks through ``os.register_at_fork`` hooks,
and logging's hooks take its module lock before the fork and release it after. Seen in
CI: SIGTERM landed in ``logging._releaseLock`` before the release, the hook's exception
was "ignored", the lock stayed held, and the next log call hung the process for good.
So a signal that lands in logging's code is delivered again a moment later.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

_UNSAFE_FILES = frozenset({os.path.normcase(logging.__file__)})
_REDELIVER_AFTER_S = 0.02
_MAX_DEFERRALS = 100  # 2 s: past that, raising late beats never stopping

_deferrals: dict[int, int] = {}


def _redeliver(signum: int) -> None:
    time.sleep(_REDELIVER_AFTER_S)
    os.kill(os.getpid(), signum)


def in_unsafe_code(frame: FrameType | None) -> bool:
    """Whether the interrupted bytecode is logging's own (its locks are held around forks)."""
    return frame is not None and os.path.normcase(frame.f_code.co_filename) in _UNSAFE_FILES


def raising(make: Callable[[int], BaseException]) -> Callable[[int, FrameType | None], None]:
    """A signal handler that raises ``make(signum)``, deferred out of logging's code."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if in_unsafe_code(frame) and _deferrals.get(signum, 0) < _MAX_DEFERRALS:
            _deferrals[signum] = _deferrals.get(signum, 0) + 1
            # a bare thread: threading's own locks may be what the main thread holds now
            _thread.start_new_thread(_redeliver, (signum,))
            return
        _deferrals.pop(signum, None)
        raise make(signum)

    return handler


def install(signums: list[int], make: Callable[[int], BaseException]) -> None:
    handler = raising(make)
    for signum in signums:
        signal.signal(signum, handler)
