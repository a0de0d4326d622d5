"""What a server that exited on its own said last: the one line that names why it died.

A crash by a signal has a backtrace; a server that calls ``exit()`` has only its stderr.
Seen on upstream 1.4.5 under ``--amplify auto`` (a worker re-enabling the listener in the
main thread's event base): exit status 1, and libevent's last line
``[err] event_queue_remove_active: 0x... not on queue 8``, its own check of a corrupted
queue. The routine noise of a flood ("Too many open connections") is not a cause.
"""

from __future__ import annotations

import re

# libevent's fatal messages and glibc's assert only: under -v memcached also prints
# "Failed to write ..." for every client that went away, which is never the cause
_FATAL = re.compile(r"^(\[err\] .+|.*Assertion .+ failed\.?)$")
MAX_CHARS = 200


def last_words(server_log: str) -> str | None:
    """The last fatal-looking line of the server's stderr, or None."""
    for line in reversed(server_log.splitlines()):
        line = line.strip()
        if _FATAL.match(line):
            return line[:MAX_CHARS]
    return None
