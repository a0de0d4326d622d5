"""What a built binary defines: used to tell whether a scenario applies to it."""

from __future__ import annotations

from pathlib import Path

from verifier.util.proc import require_tool, run


def defined_symbols(binary: Path) -> set[str]:
    """Names in the symbol table (functions and variables, static ones included)."""
    nm = require_tool("nm", "apt-get install binutils")
    result = run([nm, "--defined-only", str(binary)], timeout_s=60)
    return {parts[2] for line in result.output.splitlines() if len(parts := line.split()) == 3}


def missing_symbols(binary: Path, wanted: tuple[str, ...]) -> list[str]:
    have = defined_symbols(binary)
    return [name for name in wanted if name not in have]
