"""Data shipped beside the package: build recipes, scenarios, patches."""

from __future__ import annotations

import os
from pathlib import Path

from verifier.errors import BadInput

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def recipes_dir() -> Path:
    """``$VERIFIER_RECIPES_DIR`` or the project's ``recipes/``."""
    path = Path(os.environ.get("VERIFIER_RECIPES_DIR") or _PROJECT_ROOT / "recipes")
    if not path.is_dir():
        raise BadInput(f"recipes directory not found: {path} (set VERIFIER_RECIPES_DIR)")
    return path


def patches_dir() -> Path:
    return Path(os.environ.get("VERIFIER_PATCHES_DIR") or _PROJECT_ROOT / "patches")


def fixtures_dir() -> Path:
    """Test fixture patches (also used by ``verifier demo``)."""
    return Path(os.environ.get("VERIFIER_FIXTURES_DIR") or _PROJECT_ROOT / "tests" / "fixtures")


def resolve_patch(name: str) -> Path:
    """A patch path as given, else a file of that name (with or without .diff) in patches/."""
    given = Path(name).expanduser()
    if given.exists():
        return given
    for candidate in (patches_dir() / name, patches_dir() / f"{name}.diff"):
        if candidate.is_file():
            return candidate
    raise BadInput(f"patch file not found: {name}")
