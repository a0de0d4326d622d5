"""The host's build tools: found once, checked before any work, named in the cache key."""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import EnvironmentMissing
from verifier.util.proc import run

APT_HINT = "apt-get install build-essential autoconf automake libtool pkg-config libevent-dev"
DEFAULT_CFLAGS = "-O2 -g -march=native"


@dataclass(frozen=True)
class Toolchain:
    cc: str  # the compiler command (may be several words, e.g. from $CC)
    cc_version: str  # first line of `cc --version`
    ccache: str | None
    make: str
    jobs: int
    cflags: str
    cpu: str  # the host CPU model: -march=native depends on it

    @property
    def cc_command(self) -> str:
        return f"{self.ccache} {self.cc}" if self.ccache else self.cc

    def identity(self) -> dict[str, str]:
        """What makes two builds of the same tree differ (ccache does not)."""
        return {"cc": self.cc_version, "cflags": self.cflags, "cpu": self.cpu}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return os.uname().machine


def host_cores() -> int:
    return len(os.sched_getaffinity(0)) or os.cpu_count() or 1


def detect_toolchain(cflags: str | None = None, jobs: int | None = None) -> Toolchain:
    """Find compiler, make and ccache; raise EnvironmentMissing with an install hint."""
    cc = os.environ.get("CC") or "gcc"
    cc_words = shlex.split(cc)
    if not cc_words or not shutil.which(cc_words[0]):
        raise EnvironmentMissing(f"C compiler '{cc}' not found ({APT_HINT})")
    version = run([*cc_words, "--version"])
    if not version.ok:
        raise EnvironmentMissing(f"C compiler '{cc}' does not run: {version.output.strip()[:120]}")
    make = shutil.which("make")
    if not make:
        raise EnvironmentMissing(f"'make' not found ({APT_HINT})")
    use_ccache = os.environ.get("VERIFIER_CCACHE", "1") != "0"
    return Toolchain(
        cc=cc,
        cc_version=version.output.splitlines()[0].strip(),
        ccache=shutil.which("ccache") if use_ccache else None,
        make=make,
        jobs=jobs or host_cores(),
        cflags=cflags if cflags is not None else DEFAULT_CFLAGS,
        cpu=_cpu_model(),
    )


def check_libevent() -> str:
    """libevent's version via pkg-config (libevent-dev ships libevent.pc)."""
    if not shutil.which("pkg-config"):
        raise EnvironmentMissing(f"'pkg-config' not found ({APT_HINT})")
    result = run(["pkg-config", "--modversion", "libevent"])
    if not result.ok:
        raise EnvironmentMissing(
            "libevent development files not found (apt-get install libevent-dev)"
        )
    return result.output.strip()


def check_autotools() -> None:
    """Needed only for trees without a generated ./configure (git checkouts)."""
    for tool in ("autoconf", "automake", "aclocal", "autoheader"):
        if not shutil.which(tool):
            raise EnvironmentMissing(f"'{tool}' not found, needed for a git checkout ({APT_HINT})")
