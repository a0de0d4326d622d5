"""The default executor: cells run here, one at a time (trials that share a machine
change the race timing, so two cells never soak at once)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from verifier.matrix.cells import CellJob, CellResult
from verifier.matrix.run_cell import run_cell
from verifier.paths import CacheLayout


class LocalExecutor:
    name = "local"

    def __init__(self, layout: CacheLayout, progress: Callable[[str], None] | None = None):
        self.layout = layout
        self.progress = progress

    def run(self, jobs: Sequence[CellJob]) -> Iterator[CellResult]:
        for job in jobs:
            yield run_cell(job, self.layout, self.progress)

    def close(self) -> None:
        pass
