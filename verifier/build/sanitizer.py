"""Sanitizer builds: the compiler flags of each sanitizer, and the runtime options of a
server built with one.

Flags: ``-fsanitize=X -fno-omit-frame-pointer`` added to the build's CFLAGS (configure
passes CFLAGS to the link too, so the runtime is linked in); TSan also lowers -O2 to -O1,
as its documentation advises (fewer frames inlined away, reports stay readable).

Runtime options (set for the server only, each report written to ``log_path`` in the
trial directory, one file per process: ``<prefix>.<pid>``):

- ASan: ``halt_on_error=1`` (the first report ends the process: exit 1, a CRASH),
  ``detect_leaks=0`` (a long-running server killed by the harness is not a leak),
  ``verify_asan_link_order=0`` (the amplifier's preload library comes first in
  LD_PRELOAD; without this ASan refuses to start: "ASan runtime does not come first").
- TSan: ``halt_on_error=0``, every report collected while the server runs on;
  ``second_deadlock_stack=1`` (both stacks of a lock-order inversion);
  ``report_signal_unsafe=0`` (the amplifier's crash reporter is a signal handler).
- UBSan: ``print_stacktrace=1``, ``halt_on_error=0`` (most UBSan kinds are recoverable:
  they are collected like TSan's).
"""

from __future__ import annotations

from pathlib import Path

from verifier.vocabulary import Sanitizer

REPORT_PREFIX = "sanitizer"  # report files: <trial dir>/sanitizer.<pid>

_OPTIONS_VAR = {
    Sanitizer.ADDRESS: "ASAN_OPTIONS",
    Sanitizer.THREAD: "TSAN_OPTIONS",
    Sanitizer.UNDEFINED: "UBSAN_OPTIONS",
}
_OPTIONS = {
    Sanitizer.ADDRESS: (
        "halt_on_error=1:abort_on_error=0:detect_leaks=0:verify_asan_link_order=0"
        ":print_summary=1:symbolize=1"
    ),
    Sanitizer.THREAD: (
        "halt_on_error=0:second_deadlock_stack=1:report_signal_unsafe=0:history_size=4"
        ":print_summary=1:symbolize=1"
    ),
    Sanitizer.UNDEFINED: "print_stacktrace=1:halt_on_error=0:print_summary=1:symbolize=1",
}


def sanitizer_cflags(cflags: str, sanitizer: Sanitizer | None) -> str:
    """``cflags`` with the sanitizer's flags added (unchanged without one)."""
    if sanitizer is None:
        return cflags
    words = cflags.split()
    if sanitizer is Sanitizer.THREAD:
        words = ["-O1" if w in ("-O2", "-O3") else w for w in words]
    return " ".join([*words, f"-fsanitize={sanitizer}", "-fno-omit-frame-pointer"])


def runtime_env(sanitizer: Sanitizer | None, report_dir: Path | None) -> dict[str, str]:
    """The sanitizer's options for a server whose reports go to ``report_dir`` (None: to
    its stderr, i.e. the server log; for the auto amplifier's discovery run)."""
    if sanitizer is None:
        return {}
    if report_dir is None:
        return {_OPTIONS_VAR[sanitizer]: _OPTIONS[sanitizer]}
    log_path = (report_dir / REPORT_PREFIX).absolute()
    return {_OPTIONS_VAR[sanitizer]: f"{_OPTIONS[sanitizer]}:log_path={log_path}"}


def report_files(report_dir: Path) -> list[Path]:
    """The report files a sanitized server wrote in ``report_dir``, oldest first."""
    files = [p for p in report_dir.glob(f"{REPORT_PREFIX}.*") if p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_mtime)
