"""The one tabulate helper every command uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tabulate import tabulate


def key_value_table(rows: Sequence[tuple[str, Any]]) -> str:
    return tabulate([(k, v) for k, v in rows], tablefmt="plain")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
