"""What a soak runs: a binary, where its symbols are, and the recipe its version needs.

Either a build from the cache, or the binary a packager ships (``verify --binary``). A
shipped binary is usually stripped; its debug info is found by build id, as Debian's
dbgsym packages lay it out (``DIR/.build-id/xx/rest.debug``, default ``/usr/lib/debug``),
and serves everything that needs symbols: the scenario's symbol check, the watch
amplifier's addresses, the proofs' lock names and flag, gdb's backtraces. Without it, what
degrades is said in one line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from verifier.build.builder import BuildResult
from verifier.build.recipe import Recipe, select_recipe
from verifier.build.symbols import defined_symbols
from verifier.build.versions import parse_version
from verifier.errors import BadInput, EnvironmentMissing
from verifier.evidence.symtab import DEBUG_ROOT, debug_file, elf_info
from verifier.util.proc import run
from verifier.vocabulary import Sanitizer

MEMCACHED_VERSION_HINT = "memcached -V prints it"


@dataclass(frozen=True)
class Target:
    binary: Path
    symbols: Path  # the file symbols are read from: the binary itself, or its debug file
    recipe: Recipe
    key: str  # a stable identity: the build key, or a shipped binary's content hash
    label: str  # how reports name it
    debug_dir: Path | None = None  # where gdb looks for separate debug info
    degraded: tuple[str, ...] = field(default_factory=tuple)  # what cannot work, and why
    sanitizer: Sanitizer | None = None  # the build's --sanitize (its reports are findings)

    @classmethod
    def of_build(cls, build: BuildResult) -> Target:
        sanitizer = Sanitizer(build.meta.sanitizer) if build.meta.sanitizer else None
        return cls(
            build.binary, build.binary, build.recipe, build.key, build.describe,
            sanitizer=sanitizer,
        )  # fmt: skip


def _content_key(binary: Path) -> str:
    digest = hashlib.sha256()
    with binary.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "bin-" + digest.hexdigest()[:16]


def _version(binary: Path) -> str:
    result = run([str(binary), "-V"], timeout_s=10)
    if not result.ok:
        raise BadInput(f"{binary} -V failed: {result.output.strip()[:120]} (is it memcached?)")
    return result.output.strip()


def shipped_binary(binary: Path, debug_dir: Path | None, recipes: list[Recipe]) -> Target:
    """The binary a packager ships, with its debug info by build id (if any)."""
    if not binary.is_file():
        raise BadInput(f"no such binary: {binary}")
    version_text = _version(binary)
    version = parse_version(version_text)
    if version is None:
        raise BadInput(f"cannot tell the version of {binary} ({MEMCACHED_VERSION_HINT})")
    info = elf_info(binary)
    root = debug_dir if debug_dir is not None else DEBUG_ROOT
    separate = debug_file(info.build_id, root)
    own = bool(defined_symbols(binary))
    symbols = binary if own else separate
    degraded: tuple[str, ...] = ()
    if symbols is None:
        where = root / ".build-id" / (info.build_id[:2] if info.build_id else "??")
        degraded = (
            f"no symbols: {binary} is stripped and no debug file for build-id "
            f"{info.build_id or '?'} is under {where}; the scenario's symbol check, the "
            "watch and auto amplifiers, lock names and the lost wake-up's state proof are "
            "off, and backtraces show addresses only",
        )
        symbols = binary
    elif debug_dir is not None and not root.is_dir():
        raise EnvironmentMissing(f"--debug-dir {debug_dir} is not a directory")
    return Target(
        binary=binary.resolve(),
        symbols=symbols.resolve(),
        recipe=select_recipe(recipes, version, version_text),
        key=_content_key(binary),
        label=f"{version_text} ({binary})",
        debug_dir=root if separate is not None else None,
        degraded=degraded,
    )
