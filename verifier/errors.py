"""One exit-code enum for every command, and the error types that map onto it.

Every failure the user can cause or meet is a ``VerifierError``: the CLI prints its
message on one line and exits with its ``status``. Anything else is a bug.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Exit codes of ``verifier`` (documented in README.md)."""

    SUCCESS = 0  # build done; verify: bounded PASS; bisect: culprit found
    BUG_SEEN = 1  # verify: HANG or CRASH observed (the bug is there)
    BAD_INPUT = 2  # bad option, unknown ref, missing file (click usage errors use 2 too)
    PATCH_DOES_NOT_APPLY = 3
    PATCH_ALREADY_APPLIED = 4
    BUILD_FAILED = 5
    ENV_MISSING = 6  # a tool or package is missing (compiler, libevent, gdb, deb-src ...)
    NOT_APPLICABLE = 7  # the scenario does not apply to this build (symbols missing)
    HARNESS_ERROR = 8  # the verifier could not run the experiment (no verdict)
    INCONCLUSIVE = 9  # verify ran but never exercised the bug path; bisect could not decide
    BAD_RANGE = 10  # bisect: the endpoints do not behave as claimed
    UNKNOWN_REF = 11  # the ref (tag, branch, SHA) is not in the repository
    EXPECTATION_FAILED = 12  # verify --expect: the verdict is not the expected one
    OTHER_HANG = 13  # verify: the scenario's bug did not show (bounded), another known hang did
    NETWORK = 14  # a repository or package source could not be reached (not bad input)
    GATE_FAILED = 15  # matrix: some cell did not meet its expectation
    HUNG_UP = 129  # SIGHUP (128 + 1): state saved, children stopped
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
    TERMINATED = 143  # SIGTERM (128 + 15): state saved, children stopped


class VerifierError(Exception):
    """An expected failure with a one-line message and an exit status."""

    status: ExitStatus = ExitStatus.HARNESS_ERROR

    def __init__(self, message: str, *, detail: str = "", status: ExitStatus | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail  # extra lines (failing hunk, log tail), printed after the message
        if status is not None:
            self.status = status


class BadInput(VerifierError):
    status = ExitStatus.BAD_INPUT


class UnknownRef(VerifierError):
    status = ExitStatus.UNKNOWN_REF


class NoRecipe(BadInput):
    """No build recipe covers a version (a gap in recipes/build/)."""


class NoSanitizer(NoRecipe):
    """The build recipe of a version does not list the sanitizer asked for."""


class PatchDoesNotApply(VerifierError):
    status = ExitStatus.PATCH_DOES_NOT_APPLY


class PatchAlreadyApplied(VerifierError):
    status = ExitStatus.PATCH_ALREADY_APPLIED


class BuildFailed(VerifierError):
    """``transient``: killed from outside (signal, timeout, no space), so not cached."""

    status = ExitStatus.BUILD_FAILED

    def __init__(self, message: str, *, detail: str = "", transient: bool = False) -> None:
        super().__init__(message, detail=detail)
        self.transient = transient


class EnvironmentMissing(VerifierError):
    status = ExitStatus.ENV_MISSING


class NotApplicable(VerifierError):
    status = ExitStatus.NOT_APPLICABLE


class NoTls(NotApplicable):
    """--tls asked of a source whose configure has no --enable-tls (before 1.5.13)."""


class HarnessError(VerifierError):
    status = ExitStatus.HARNESS_ERROR


class BadRange(VerifierError):
    status = ExitStatus.BAD_RANGE


class NetworkError(VerifierError):
    status = ExitStatus.NETWORK
