"""Settings read from the environment, checked: a bad value is one line of bad input."""

from __future__ import annotations

import os

from verifier.errors import BadInput


def seconds_from_env(name: str, default: float, *, allow_zero: bool = False) -> float:
    """``$name`` as seconds if set (and not empty), else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"{name}={text!r} is not a number of seconds") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise BadInput(f"{name} must be {'>=' if allow_zero else '>'} 0 (got {text})")
    return value
