"""Source + patches + recipe -> a cached memcached binary.

The cache key covers everything that changes the binary: the commit, each patch's content
and direction, the recipe file, the compiler version, the flags and the host CPU. A repeat
is a lookup; a miss builds in a staging directory that is promoted only when complete.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from git import GitCommandError

from verifier.build.cache import BuildCache, CacheEntry
from verifier.build.recipe import Recipe, load_recipes, select_recipe
from verifier.build.toolchain import Toolchain, check_autotools, check_libevent, detect_toolchain
from verifier.build.versions import parse_version
from verifier.errors import BuildFailed
from verifier.patch.apply import PatchFile, PatchOutcome, apply_patch
from verifier.resources import recipes_dir
from verifier.source.select import SourceChoice
from verifier.util.hashing import digest
from verifier.util.locks import file_lock
from verifier.util.proc import run

LOG_TAIL_LINES = 15
STEP_TIMEOUT_S = 900


@dataclass(frozen=True)
class BuildRequest:
    source: SourceChoice
    ref: str
    patches: tuple[Path, ...] = ()
    reverse: bool = False
    cflags: str | None = None
    rebuild: bool = False


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
    def build_seconds(self) -> float:
        return float(self.entry.meta.get("build_seconds", 0.0))


class _Plan(NamedTuple):
    sha: str
    describe: str
    recipe: Recipe
    patches: list[PatchFile]
    toolchain: Toolchain
    key: str


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


def build_key(
    sha: str, patches: list[PatchFile], reverse: bool, recipe: Recipe, toolchain: Toolchain
) -> str:
    return digest(
        "memcached-build/1",
        sha,
        [digest(p.text) for p in patches],
        reverse,
        recipe.content_hash,
        toolchain.identity(),
    )[:20]


class Builder:
    def __init__(self, cache_root: Path, locks_dir: Path) -> None:
        self.cache = BuildCache(cache_root)
        self.locks_dir = locks_dir
        self._recipes: list[Recipe] | None = None
        self._toolchain: Toolchain | None = None

    @property
    def recipes(self) -> list[Recipe]:
        if self._recipes is None:
            self._recipes = load_recipes(recipes_dir() / "build")
        return self._recipes

    def toolchain(self, cflags: str | None) -> Toolchain:
        if self._toolchain is None or (cflags is not None and cflags != self._toolchain.cflags):
            self._toolchain = detect_toolchain(cflags)
            check_libevent()
        return self._toolchain

    def _plan(self, request: BuildRequest) -> _Plan:
        toolchain = self.toolchain(request.cflags)
        patches = [PatchFile.load(path) for path in request.patches]
        sha = request.source.git.resolve(request.ref)
        version, describe = _version_of(request, sha)
        recipe = select_recipe(self.recipes, version, describe)
        key = build_key(sha, patches, request.reverse, recipe, toolchain)
        return _Plan(sha, describe, recipe, patches, toolchain, key)

    def is_cached(self, request: BuildRequest) -> bool:
        """Whether ``build(request)`` would be a lookup (a success or a known failure)."""
        return self.cache.get(self._plan(request).key) is not None

    def build(self, request: BuildRequest) -> BuildResult:
        started = time.monotonic()
        sha, describe, recipe, patches, toolchain, key = self._plan(request)

        def result(entry: CacheEntry, hit: bool, notes: list[str]) -> BuildResult:
            return BuildResult(
                entry, sha, describe, recipe, patches, hit, time.monotonic() - started, notes
            )

        cached = None if request.rebuild else self.cache.get(key)
        if cached is None:
            with file_lock(self.locks_dir / f"build-{key[:24]}.lock"):
                cached = None if request.rebuild else self.cache.get(key)
                if cached is None:
                    entry, notes = self._build(
                        request, sha, describe, recipe, patches, key, toolchain
                    )
                    return result(entry, False, notes)
        self.cache.touch(cached)
        if not cached.ok:
            raise _failure(cached, cached_failure=True)
        return result(cached, True, list(cached.meta.get("patch_notes", [])))

    def _build(
        self,
        request: BuildRequest,
        sha: str,
        describe: str,
        recipe: Recipe,
        patches: list[PatchFile],
        key: str,
        toolchain: Toolchain,
    ) -> tuple[CacheEntry, list[str]]:
        staging = self.cache.staging(key)
        try:
            tree = staging / "tree"
            request.source.git.checkout(sha, tree)
            ordered = list(reversed(patches)) if request.reverse else patches
            outcomes: list[PatchOutcome] = [
                apply_patch(tree, patch, reverse=request.reverse) for patch in ordered
            ]
            notes = [outcome.describe() for outcome in outcomes]
            meta = {
                "key": key,
                "commit": sha,
                "describe": describe,
                "source": request.source.label,
                "patches": [
                    {"name": p.name, "sha256": digest(p.text), "description": p.header.description}
                    for p in patches
                ],
                "reverse": request.reverse,
                "patch_notes": notes,
                "recipe": recipe.path.name,
                "toolchain": toolchain.identity(),
                "created": time.time(),
            }
            phases, ok = _run_recipe(tree, recipe, toolchain, staging / "build.log")
            meta["phases"] = phases
            meta["build_seconds"] = round(sum(phases.values()), 3)
            meta["status"] = "ok" if ok and (tree / "memcached").is_file() else "failed"
            if meta["status"] != "ok":
                shutil.rmtree(tree, ignore_errors=True)  # keep the log, not the broken tree
            entry = self.cache.promote(key, staging, meta)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not entry.ok:
            raise _failure(entry, cached_failure=False)
        return entry, notes


def _date_generated_files(tree: Path, generated: tuple[str, ...]) -> None:
    """After a git checkout all files have about the same mtime; make would then try to
    regenerate configure with the local automake. Date inputs before outputs."""
    base = time.time() - 600
    for path in tree.rglob("*"):
        if ".git" not in path.parts and path.is_file():
            os.utime(path, (base, base))
    for offset, name in enumerate(generated, start=1):
        if (tree / name).is_file():
            os.utime(tree / name, (base + offset, base + offset))


def _run_recipe(
    tree: Path, recipe: Recipe, toolchain: Toolchain, log_path: Path
) -> tuple[dict[str, float], bool]:
    env = dict(os.environ)
    env.update(
        CC=toolchain.cc_command,
        CCACHE_NOHASHDIR="1",  # staging paths differ per build; do not let them defeat ccache
        CCACHE_BASEDIR=str(tree),
        LC_ALL="C",
    )
    has_configure = (tree / "configure").is_file()
    steps: list[tuple[str, tuple[str, ...]]] = []
    if has_configure:
        _date_generated_files(tree, recipe.touch_generated)
    else:
        check_autotools()
        steps += [("autogen", cmd) for cmd in recipe.autogen]
    steps.append(("configure", (*recipe.configure, f"CFLAGS={toolchain.cflags}")))
    steps += [("post_configure", cmd) for cmd in recipe.post_configure]
    steps.append(("make", (toolchain.make, f"-j{toolchain.jobs}", *recipe.targets)))
    phases: dict[str, float] = {}
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# recipe {recipe.path.name}; toolchain {toolchain.identity()}\n")
        for phase, argv in steps:
            started = time.monotonic()
            result = run(argv, cwd=tree, env=env, timeout_s=STEP_TIMEOUT_S, log=log)
            phases[phase] = round(phases.get(phase, 0.0) + time.monotonic() - started, 3)
            if not result.ok:
                log.write(f"# step {phase} failed (exit {result.returncode})\n")
                return phases, False
    return phases, True


def _failure(entry: CacheEntry, *, cached_failure: bool) -> BuildFailed:
    try:
        lines = entry.log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    tail = "\n".join("  " + line for line in lines[-LOG_TAIL_LINES:])
    prefix = "build failed (cached result; --rebuild retries)" if cached_failure else "build failed"
    what = entry.meta.get("describe", entry.key[:12])
    return BuildFailed(f"{prefix}: {what}; log: {entry.log}", detail=tail)
