"""Compile libamplify.so once per (source, compiler) and build a child's preload environment."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from verifier.amplify.spec import ENV_EXE, ENV_MUTED, ENV_RULES, ENV_STATUS, Rule, encode_rules
from verifier.errors import EnvironmentMissing
from verifier.util.locks import file_lock

SOURCE = Path(__file__).with_name("libamplify.c")
CFLAGS = ("-shared", "-fPIC", "-O2", "-pthread")
LIBS = ("-ldl",)
BUILD_HINT = "apt-get install build-essential linux-libc-dev"


def _compiler(cc: str) -> tuple[list[str], str]:
    """The compiler's argv and its full ``--version`` text (part of the cache key)."""
    words = shlex.split(cc)
    if not words or shutil.which(words[0]) is None:
        raise EnvironmentMissing(f"C compiler '{cc}' not found ({BUILD_HINT})")
    proc = subprocess.run([*words, "--version"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EnvironmentMissing(f"C compiler '{cc}' does not run: {proc.stderr.strip()[:120]}")
    return words, proc.stdout


def build_library(cache_dir: Path, cc: str = "cc") -> Path:
    """Path of libamplify.so under ``cache_dir``, compiling it first if needed.

    Keyed by sha256(source, compiler version, flags); built under an flock into a temporary
    name and renamed, so concurrent verifiers never load a half-written library.
    """
    words, version = _compiler(cc)
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, version.encode(), " ".join(CFLAGS + LIBS).encode()])
    ).hexdigest()[:16]
    out = cache_dir / f"libamplify-{key}.so"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / "libamplify.lock"):
        if out.is_file():  # another process built it while we waited
            return out
        tmp = cache_dir / f".libamplify-{key}.{os.getpid()}.so"
        argv = [*words, *CFLAGS, "-o", str(tmp), str(SOURCE), *LIBS]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), "")
            raise EnvironmentMissing(
                f"cannot compile the amplifier library: {first.strip()[:160]} ({BUILD_HINT})",
                detail=f"$ {shlex.join(argv)}\n{proc.stderr}",
            )
        os.replace(tmp, out)
    return out


def preload_env(
    lib: Path,
    rules: Sequence[Rule],
    status_file: Path | None,
    base: Mapping[str, str] | None = None,
    target: Path | None = None,
    muted: Sequence[int] = (),
) -> dict[str, str]:
    """``base`` (default: os.environ) plus LD_PRELOAD and the amplifier's variables.

    ``target``: the executable the rules are for (its symoffs come from it). Give it when
    the program is started through a wrapper (sh -c, env, setsid, timeout): without it
    the first process that loads the library takes the rules. Removes a stale
    ``status_file`` so that a reader never mistakes an old run's counters for this one's.
    No rules: the library only installs its crash reporter. ``muted``: indexes of rules
    that start muted (``counters.mute_rules`` unmutes them while the server runs).
    """
    env = dict(os.environ if base is None else base)
    lib_path = str(lib.absolute())
    preload = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p != lib_path]
    env["LD_PRELOAD"] = " ".join([lib_path, *preload])
    env[ENV_RULES] = encode_rules(rules)
    env.pop(ENV_MUTED, None)
    if muted:  # these rules start muted; unmuted later through the status file
        env[ENV_MUTED] = hex(sum(1 << i for i in set(muted)))
    env.pop(ENV_STATUS, None)
    env.pop(ENV_EXE, None)
    if target is not None:
        env[ENV_EXE] = str(target.absolute())
    if status_file is not None:
        status_file.unlink(missing_ok=True)
        env[ENV_STATUS] = str(status_file.absolute())
    return env
