"""Cell results kept by key, so a rerun re-soaks only the cells whose inputs changed.

Only verdicts are kept: a cell that failed to build or run is tried again next time (a
failed build is cached by the builder anyway, so that retry costs a lookup). One JSON file
per key, written atomically; a file that does not parse is treated as absent.
"""

from __future__ import annotations

import json
from pathlib import Path

from verifier.matrix.cells import CellResult
from verifier.util.atomic import write_json
from verifier.vocabulary import VerdictKind


class CellCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> CellResult | None:
        try:
            data = json.loads(self.path(key).read_text(encoding="utf-8"))
            return CellResult.from_json(data, cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, result: CellResult) -> bool:
        """Keep ``result`` if it is a verdict worth reusing; True when kept."""
        if result.verdict is None or result.verdict.kind == VerdictKind.ERROR:
            return False
        write_json(self.path(result.key), result.to_json())
        return True
