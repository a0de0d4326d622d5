"""SIGTERM becomes an exception, but never inside logging's lock handling around a fork."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Runs in its own interpreter: it installs the CLI's handlers and sends itself signals.
_CHILD = textwrap.dedent(
    """
    import logging, os, signal, sys, time
    from verifier.cli.main import Terminated, install_signal_handlers

    install_signal_handlers()
    handler = signal.getsignal(signal.SIGTERM)
    # a real frame running logging's code, as at-fork's _releaseLock would be
    namespace = {}
    exec(compile("import sys\\nframe = sys._getframe()", logging.__file__, "exec"), namespace)
    handler(signal.SIGTERM, namespace["frame"])  # deferred: must not raise here
    print("deferred", flush=True)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except Terminated as stop:
        print("delivered", stop, flush=True)
        sys.exit(0)
    print("never delivered", flush=True)
    sys.exit(1)
    """
)


def test_a_signal_inside_logging_is_deferred_then_delivered() -> None:
    """Seen in CI: SIGTERM raised inside logging._releaseLock (an at-fork hook of every
    subprocess with a preexec_fn) leaked logging's lock, and the next log call hung."""
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split("\n")[:2] == ["deferred", "delivered SIGTERM"], result.stdout
