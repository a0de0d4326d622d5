"""Reaching a remote: bounded in time, and a failure that says why and what to do instead.

git and apt-get print the reason a remote could not be reached ("Could not resolve host",
"Connection refused", "Failed to connect" ...) on their last lines; that reason goes into
the one-line error, which is a ``NetworkError`` (exit 14) when the network is at fault and
``BadInput`` (exit 2) when the location itself is wrong (not a repository, 404).

Clones and fetches run under ``$VERIFIER_GIT_TIMEOUT`` (default 600 s; also bounds
``apt-get source``), and git gives up on a stalled transfer by itself
(``GIT_HTTP_LOW_SPEED_LIMIT/TIME``: under 1 KB/s for 60 s) and never prompts for a password
(``GIT_TERMINAL_PROMPT=0``: a prompt on a closed stdin would wait forever).
"""

from __future__ import annotations

import os
import re

from verifier.errors import BadInput, NetworkError
from verifier.util.env import seconds_from_env

GIT_TIMEOUT_ENV = "VERIFIER_GIT_TIMEOUT"
DEFAULT_GIT_TIMEOUT_S = 600.0
NETWORK_HINT = "no network? use --repo PATH (a local clone) or --source debian"

# Messages of git (curl, ssh) and apt that mean "the remote could not be reached".
_UNREACHABLE_RE = re.compile(
    r"Could not resolve (?:host|hostname|proxy)|Temporary failure (?:in name resolution|"
    r"resolving)|Name or service not known|Connection refused|Failed to connect|"
    r"Couldn't connect to server|Could not connect|Unable to connect|Connection timed out|"
    r"Operation timed out|Network is unreachable|No route to host|Connection reset|"
    r"Could not read from remote repository|SSL_connect|gnutls_handshake|"
    r"transfer rate too low|Operation too slow",
    re.IGNORECASE,
)
_GIT_PREFIX_RE = re.compile(r"^(?:fatal|error|E):\s*")
_UNABLE_TO_ACCESS_RE = re.compile(r"^unable to access '[^']*':\s*")  # git over curl
_FAILED_TO_FETCH_RE = re.compile(r"^Failed to fetch \S+\s+")  # apt


def git_timeout_s() -> float:
    """``$VERIFIER_GIT_TIMEOUT`` seconds (default 600) for one clone, fetch or download."""
    return seconds_from_env(GIT_TIMEOUT_ENV, DEFAULT_GIT_TIMEOUT_S)


def git_network_env() -> dict[str, str]:
    """The environment for a git command that may talk to a remote."""
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
    env.setdefault("GIT_HTTP_LOW_SPEED_TIME", "60")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=30")
    return env


def reason(output: str) -> str:
    """The tool's own reason, from its output: the last line that says something
    ("fatal: unable to access 'URL': Could not resolve host: x" -> "Could not resolve host: x")."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    fatal = [line for line in lines if _GIT_PREFIX_RE.match(line)]
    unreachable = [line for line in fatal if _UNREACHABLE_RE.search(line)]
    # apt says it once per file (the first will do); git says it last
    picked = unreachable[0] if unreachable else (fatal or lines or ["no output"])[-1]
    picked = _GIT_PREFIX_RE.sub("", picked)
    picked = _FAILED_TO_FETCH_RE.sub("", _UNABLE_TO_ACCESS_RE.sub("", picked))
    return picked.strip()


def is_unreachable(output: str) -> bool:
    return bool(_UNREACHABLE_RE.search(output))


def remote_failure(
    what: str, output: str, *, timed_out: bool = False, timeout_s: float = 0.0
) -> NetworkError | BadInput:
    """The error for a failed clone/fetch/download: network (exit 14) or bad input (2)."""
    if timed_out:
        return NetworkError(
            f"{what}: no answer within {timeout_s:.0f} s ({GIT_TIMEOUT_ENV} sets the limit); "
            f"{NETWORK_HINT}"
        )
    why = reason(output)
    if is_unreachable(output):
        return NetworkError(f"{what}: {why}; {NETWORK_HINT}")
    return BadInput(f"{what}: {why}")
