"""Source + patches + recipe -> a cached memcached binary.

The cache key covers everything that changes the binary: the commit, each patch's content
and direction, the recipe file, the compiler version, the flags and the host CPU (not the
build user: it changes no byte). A repeat is a lookup; a miss builds in a staging
directory that is promoted only when complete.

``acquire`` pins the build for as long as the caller uses it (``cache clean`` skips a
pinned entry); ``build`` is ``acquire`` for callers that only want the path now.

Only a real configure/compile failure is cached: a step killed by a signal (an OOM-killed
``cc1`` shows as "internal compiler error: Killed"), a timeout or a full disk says nothing
about the commit, so it raises ``BuildFailed(transient=True)`` and leaves no entry; the next
run builds again. (Bisect used to skip such a commit for good.)
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from git import GitCommandError, Repo

from verifier.build.cache import BuildCache, BuildMeta, BuildStatus, CacheEntry, PatchRecord
from verifier.build.isolation import (
    BuildArea,
    BuildUser,
    build_area,
    current_user_name,
    resolve_build_user,
)
from verifier.build.recipe import Recipe, load_recipes, select_recipe
from verifier.build.sanitizer import sanitizer_cflags
from verifier.build.toolchain import (
    DEFAULT_CFLAGS,
    Toolchain,
    check_autotools,
    check_libevent,
    detect_toolchain,
)
from verifier.build.versions import parse_version
from verifier.errors import BuildFailed, NoSanitizer, NoTls
from verifier.patch.apply import PatchFile, PatchOutcome, apply_patch
from verifier.resources import recipes_dir
from verifier.source.select import SourceChoice
from verifier.util.hashing import digest
from verifier.util.locks import file_lock
from verifier.util.proc import CommandResult, run, run_as
from verifier.vocabulary import Sanitizer

LOG_TAIL_LINES = 15
STEP_TIMEOUT_S = 900
PIN_WAIT_S = 60.0  # a clean holds a pin only while it deletes that one entry
BUILD_WAIT_S = 3600.0  # another process building the same key: a few steps of STEP_TIMEOUT_S


class FailureCause(enum.StrEnum):
    """Why a build step failed; only the first two say something about the source."""

    COMPILE = "failed"  # configure or the compiler said no: cached
    NO_BINARY = "no binary"  # every step passed but no memcached came out: cached
    SIGNAL = "killed by a signal"
    TIMEOUT = "timed out"
    NO_SPACE = "no space left on device"
    OUT_OF_MEMORY = "compiler killed (out of memory?)"

    @property
    def transient(self) -> bool:
        return self not in (FailureCause.COMPILE, FailureCause.NO_BINARY)


# What tools print when the machine, not the source, stopped them. make reports a recipe
# line killed by a signal as "*** [target] Killed" (or "Error 137" through a shell).
_NO_SPACE_RE = re.compile(r"No space left on device|Disk quota exceeded")
_OOM_RE = re.compile(
    r"internal compiler error: Killed|Killed signal terminated program|"
    r"virtual memory exhausted|out of memory allocating|Cannot allocate memory"
)
_MAKE_KILLED_RE = re.compile(r"\*\*\* \[[^\]]*\] (?:Killed|Terminated|Error 13[07])\b")


def classify_step(result: CommandResult) -> FailureCause | None:
    """None if the step passed, else why it failed (transient causes first)."""
    if result.timed_out:
        return FailureCause.TIMEOUT
    if result.returncode == 0:
        return None
    if result.returncode < 0:
        return FailureCause.SIGNAL
    if _NO_SPACE_RE.search(result.output):
        return FailureCause.NO_SPACE
    if _OOM_RE.search(result.output):
        return FailureCause.OUT_OF_MEMORY
    if _MAKE_KILLED_RE.search(result.output) or result.returncode in (137, 143):
        return FailureCause.SIGNAL
    return FailureCause.COMPILE


@dataclass(frozen=True)
class BuildRequest:
    source: SourceChoice
    ref: str
    patches: tuple[Path, ...] = ()
    reverse: bool = False
    cflags: str | None = None
    rebuild: bool = False
    build_user: str | None = None  # None: $VERIFIER_BUILD_USER, else nobody (root only)
    sanitizer: Sanitizer | None = None  # --sanitize: its flags are added to cflags
    tls: bool = False  # --tls: ./configure --enable-tls (1.5.13+; needs libssl-dev)

    @property
    def configure_args(self) -> tuple[str, ...]:
        """Arguments added to the recipe's configure step."""
        return ("--enable-tls",) if self.tls else ()

    @property
    def effective_cflags(self) -> str | None:
        """The CFLAGS the build uses (None: the toolchain's default, unsanitized)."""
        if self.sanitizer is None:
            return self.cflags
        return sanitizer_cflags(self.cflags or DEFAULT_CFLAGS, self.sanitizer)


@dataclass
class BuildResult:
    entry: CacheEntry
    commit: str
    describe: str
    recipe: Recipe
    patches: list[PatchFile]
    cache_hit: bool
    seconds: float  # wall time of this request (a cache hit is a lookup)
    patch_notes: list[str] = field(default_factory=list)

    @property
    def binary(self) -> Path:
        return self.entry.binary

    @property
    def meta(self) -> BuildMeta:
        return self.entry.meta

    @property
    def key(self) -> str:
        return self.entry.key

    @property
    def log(self) -> Path:
        return self.entry.log

    @property
    def source_label(self) -> str:
        return self.entry.meta.source

    @property
    def reverse(self) -> bool:
        return self.entry.meta.reverse

    @property
    def build_user(self) -> str:
        return self.entry.meta.build_user

    @property
    def build_seconds(self) -> float:
        return self.entry.meta.build_seconds


class _Plan(NamedTuple):
    sha: str
    describe: str
    recipe: Recipe
    patches: list[PatchFile]
    toolchain: Toolchain
    key: str
    user: BuildUser | None


@dataclass
class _Steps:
    phases: dict[str, float]
    failure: FailureCause | None = None
    failed_step: str = ""


def _version_of(request: BuildRequest, sha: str) -> tuple[tuple[int, int, int], str]:
    git = request.source.git
    describe = git.describe(sha)
    try:  # tarball-derived trees (Debian) carry version.m4; git checkouts generate it
        version_m4 = git.repo.git.show(f"{sha}:version.m4")
    except GitCommandError:
        version_m4 = ""
    version = parse_version(version_m4) or parse_version(describe)
    if version is None:
        raise BuildFailed(
            f"cannot tell the memcached version of {describe} (no version.m4, no tag)"
        )
    return version, describe


def configure_has_tls(repo: Repo, sha: str) -> bool:
    """Does the source's configure.ac know --enable-tls (upstream 1.5.13 on)?"""
    try:
        return "enable-tls" in repo.git.show(f"{sha}:configure.ac")
    except GitCommandError:
        return False


def _require_tls(request: BuildRequest, sha: str, describe: str) -> None:
    if not configure_has_tls(request.source.git.repo, sha):
        raise NoTls(
            f"--tls: {describe} has no ./configure --enable-tls (TLS arrived in memcached 1.5.13)"
        )


def build_key(
    sha: str,
    patches: list[PatchFile],
    reverse: bool,
    recipe: Recipe,
    toolchain: Toolchain,
    sanitizer: Sanitizer | None = None,
    tls: bool = False,
) -> str:
    parts: list[object] = [
        "memcached-build/1",
        sha,
        [digest(p.text) for p in patches],
        reverse,
        recipe.content_hash,
        toolchain.identity(),
    ]
    if sanitizer is not None:  # unsanitized keys stay what they were
        parts.append(f"sanitize={sanitizer}")
    if tls:  # plain keys stay what they were
        parts.append("tls")
    return digest(*parts)[:20]


class Builder:
    def __init__(
        self, cache_root: Path, locks_dir: Path, *, ccache_root: Path | None = None
    ) -> None:
        self.cache = BuildCache(cache_root, locks_dir)
        self.locks_dir = locks_dir
        # where a build user's ccache lives (<cache>/ccache/<user>)
        self.ccache_root = ccache_root if ccache_root is not None else cache_root.parent / "ccache"
        self._recipes: list[Recipe] | None = None
        self._toolchain: Toolchain | None = None

    @property
    def recipes(self) -> list[Recipe]:
        if self._recipes is None:
            self._recipes = load_recipes(recipes_dir() / "build")
        return self._recipes

    def toolchain(self, cflags: str | None) -> Toolchain:
        wanted = cflags if cflags is not None else DEFAULT_CFLAGS
        if self._toolchain is None or wanted != self._toolchain.cflags:
            self._toolchain = detect_toolchain(wanted)
            check_libevent()
        return self._toolchain

    def _plan(self, request: BuildRequest) -> _Plan:
        user = resolve_build_user(request.build_user)
        toolchain = self.toolchain(request.effective_cflags)
        patches = [PatchFile.load(path) for path in request.patches]
        sha = request.source.git.resolve(request.ref)
        version, describe = _version_of(request, sha)
        recipe = select_recipe(self.recipes, version, describe)
        if request.sanitizer is not None and request.sanitizer not in recipe.sanitizers:
            known = ", ".join(recipe.sanitizers) or "none"
            raise NoSanitizer(
                f"recipe {recipe.path.name} does not build {describe} with "
                f"--sanitize {request.sanitizer} (known to work: {known})"
            )
        if request.tls:
            _require_tls(request, sha, describe)
        key = build_key(
            sha, patches, request.reverse, recipe, toolchain, request.sanitizer, request.tls
        )
        return _Plan(sha, describe, recipe, patches, toolchain, key, user)

    def is_cached(self, request: BuildRequest) -> bool:
        """Whether ``build(request)`` would be a lookup (a success or a known failure)."""
        return self.cache.get(self._plan(request).key) is not None

    @contextlib.contextmanager
    def acquire(self, request: BuildRequest) -> Iterator[BuildResult]:
        """The build for ``request`` (looked up or built), pinned until the block ends:
        ``cache clean`` skips it meanwhile. The shared pin is taken before the lookup, so a
        clean either finishes removing the entry first (and this builds it again) or skips it.
        """
        started = time.monotonic()
        plan = self._plan(request)
        with file_lock(self.cache.pin_path(plan.key), shared=True, timeout_s=PIN_WAIT_S):
            yield self._lookup_or_build(request, plan, started)

    def build(self, request: BuildRequest) -> BuildResult:
        """Like ``acquire``, but the pin ends on return (the caller only wants the path)."""
        with self.acquire(request) as result:
            return result

    def _lookup_or_build(self, request: BuildRequest, plan: _Plan, started: float) -> BuildResult:
        def result(entry: CacheEntry, hit: bool, notes: list[str]) -> BuildResult:
            return BuildResult(
                entry,
                plan.sha,
                plan.describe,
                plan.recipe,
                plan.patches,
                hit,
                time.monotonic() - started,
                notes,
            )

        cached = None if request.rebuild else self.cache.get(plan.key)
        if cached is None:
            lock = self.locks_dir / f"build-{plan.key}.lock"
            with file_lock(lock, timeout_s=BUILD_WAIT_S):
                cached = None if request.rebuild else self.cache.get(plan.key)
                if cached is None:
                    entry, notes = self._build(request, plan)
                    return result(entry, False, notes)
        self.cache.touch(cached)
        if not cached.ok:
            raise _failure(cached, cached_failure=True)
        return result(cached, True, list(cached.meta.patch_notes))

    def _build(self, request: BuildRequest, plan: _Plan) -> tuple[CacheEntry, list[str]]:
        staging = self.cache.staging(plan.key)
        log_path = staging / "build.log"
        try:
            with build_area(plan.user, staging, self.ccache_root) as area:
                request.source.git.checkout(plan.sha, area.tree, independent=area.isolated)
                patches = area.stage_patches(plan.patches)
                area.hand_over()
                ordered = list(reversed(patches)) if request.reverse else patches
                with run_as(area.runner):
                    outcomes: list[PatchOutcome] = [
                        apply_patch(area.tree, patch, reverse=request.reverse) for patch in ordered
                    ]
                    steps = _run_recipe(
                        area, plan.recipe, plan.toolchain, log_path, request.configure_args
                    )
                if steps.failure is None:
                    area.collect(staging / "tree")
            notes = [outcome.describe() for outcome in outcomes]
            failure = steps.failure
            if failure is None and not _regular_file(staging / "tree" / "memcached"):
                failure = FailureCause.NO_BINARY
            if failure is not None:
                shutil.rmtree(staging / "tree", ignore_errors=True)  # keep the log only
            if failure is not None and failure.transient:
                kept = self.cache.keep_transient_log(plan.key, log_path)
                raise _transient(plan, failure, steps.failed_step, kept)
            meta = _meta(request, plan, notes, steps, ok=failure is None)
            entry = self.cache.promote(plan.key, staging, meta)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not entry.ok:
            raise _failure(entry, cached_failure=False)
        return entry, notes


def _meta(
    request: BuildRequest, plan: _Plan, notes: list[str], steps: _Steps, *, ok: bool
) -> BuildMeta:
    return BuildMeta(
        key=plan.key,
        commit=plan.sha,
        describe=plan.describe,
        source=request.source.label,
        patches=tuple(
            PatchRecord(p.name, digest(p.text), p.header.description or "") for p in plan.patches
        ),
        reverse=request.reverse,
        patch_notes=tuple(notes),
        recipe=plan.recipe.path.name,
        toolchain=plan.toolchain.identity(),
        sanitizer=str(request.sanitizer or ""),
        tls=request.tls,
        build_user=plan.user.name if plan.user else current_user_name(),
        created=time.time(),
        phases=steps.phases,
        build_seconds=round(sum(steps.phases.values()), 3),
        status=BuildStatus.OK if ok else BuildStatus.FAILED,
    )


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _date_generated_files(tree: Path, generated: tuple[str, ...]) -> None:
    """After a git checkout all files have about the same mtime; make would then try to
    regenerate configure with the local automake. Date inputs before outputs. (Runs as
    this process in a tree the build user may own: symlinks are never followed.)"""
    base = time.time() - 600
    for top, dirs, files in os.walk(tree):
        if top == str(tree):
            dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            with contextlib.suppress(OSError):
                os.utime(os.path.join(top, name), (base, base), follow_symlinks=False)
    for offset, name in enumerate(generated, start=1):
        if _regular_file(tree / name):
            stamp = base + offset
            os.utime(tree / name, (stamp, stamp), follow_symlinks=False)


def _steps(
    tree: Path, recipe: Recipe, toolchain: Toolchain, configure_args: tuple[str, ...] = ()
) -> list[tuple[str, tuple[str, ...]]]:
    steps: list[tuple[str, tuple[str, ...]]] = []
    if (tree / "configure").is_file():
        _date_generated_files(tree, recipe.touch_generated)
    else:
        check_autotools()
        steps += [("autogen", cmd) for cmd in recipe.autogen]
    steps.append(("configure", (*recipe.configure, *configure_args, f"CFLAGS={toolchain.cflags}")))
    steps += [("post_configure", cmd) for cmd in recipe.post_configure]
    steps += [("make", cmd) for cmd in recipe.make_commands(toolchain.make, toolchain.jobs)]
    return steps


def _run_recipe(
    area: BuildArea,
    recipe: Recipe,
    toolchain: Toolchain,
    log_path: Path,
    configure_args: tuple[str, ...] = (),
) -> _Steps:
    tree = area.tree
    env = dict(os.environ)
    env.update(
        CC=toolchain.cc_command,
        CCACHE_NOHASHDIR="1",  # staging paths differ per build; do not let them defeat ccache
        CCACHE_BASEDIR=str(tree),
        LC_ALL="C",
    )
    if area.isolated:  # the build user's own ccache, or none (never root's)
        if area.ccache_dir is not None:
            env["CCACHE_DIR"] = str(area.ccache_dir)
        else:
            env["CCACHE_DISABLE"] = "1"
    who = area.user.name if area.user else current_user_name()
    outcome = _Steps(phases={})
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(
            f"# recipe {recipe.path.name}; toolchain {toolchain.identity()}; build user {who}\n"
        )
        for phase, argv in _steps(tree, recipe, toolchain, configure_args):
            started = time.monotonic()
            result = run(argv, cwd=tree, env=env, timeout_s=STEP_TIMEOUT_S, log=log)
            outcome.phases[phase] = round(
                outcome.phases.get(phase, 0.0) + time.monotonic() - started, 3
            )
            cause = classify_step(result)
            if cause is not None:
                kind = "transient: not cached" if cause.transient else "cached"
                log.write(f"# step {phase} {cause} (exit {result.returncode}); {kind}\n")
                outcome.failure, outcome.failed_step = cause, phase
                return outcome
    return outcome


def _log_tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    return "\n".join("  " + line for line in lines[-LOG_TAIL_LINES:])


def _transient(plan: _Plan, cause: FailureCause, step: str, log: Path) -> BuildFailed:
    return BuildFailed(
        f"build of {plan.describe} {cause} in step {step}: transient, not cached "
        f"(the next run builds again); log: {log}",
        detail=_log_tail(log),
        transient=True,
    )


def _failure(entry: CacheEntry, *, cached_failure: bool) -> BuildFailed:
    prefix = "build failed (cached result; --rebuild retries)" if cached_failure else "build failed"
    what = entry.meta.describe or entry.key[:12]
    return BuildFailed(f"{prefix}: {what}; log: {entry.log}", detail=_log_tail(entry.log))
