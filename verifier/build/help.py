"""What a built binary says about itself: its ``-h`` text and the version on its first line."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from verifier.build.versions import Version, parse_version
from verifier.errors import HarnessError


def help_text(binary: Path) -> str:
    """``memcached -h`` (every release prints it and exits 0: 1.4.5 as 1.6.18)."""
    return _help(str(binary), binary.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _help(binary: str, mtime_ns: int) -> str:
    try:
        return subprocess.run(
            [binary, "-h"], capture_output=True, text=True, timeout=10, errors="replace"
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessError(f"cannot run {binary} -h: {exc}") from None


def binary_version(binary: Path) -> Version | None:
    """The version ``-h`` prints first ("memcached 1.6.18"); None if it prints none."""
    lines = help_text(binary).splitlines()
    return parse_version(lines[0]) if lines and lines[0].startswith("memcached") else None
