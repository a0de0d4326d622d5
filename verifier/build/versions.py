"""Dotted versions and ranges like ">=1.4.0, <1.5.0" (enough for memcached's numbering)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_OPS: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}

Version = tuple[int, int, int]


def parse_version(text: str) -> Version | None:
    """First x.y[.z] in ``text`` ("1.4.5-12-gabc" -> (1, 4, 5)); None if there is none."""
    match = _VERSION_RE.search(text)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def in_range(version: Version, spec: str) -> bool:
    """``spec`` is comma-separated clauses such as ">=1.5.0, <1.7"; "*" matches all."""
    for clause in (c.strip() for c in spec.split(",")):
        if clause in ("", "*"):
            continue
        match = re.match(r"^(>=|<=|==|>|<)\s*(.+)$", clause)
        bound = parse_version(match[2]) if match else None
        if not match or bound is None:
            raise ValueError(f"bad version clause {clause!r}")
        if not _OPS[match[1]](version, bound):
            return False
    return True
