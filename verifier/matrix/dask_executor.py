"""Cells on an existing Dask distributed cluster, one whole machine per cell
(``verifier.cluster.dask``: workers under their nanny are fine; a worker lost mid-cell is
retried on another, and the cell's notes say so; the lost attempt is never counted).

Each cell runs as ``python -m verifier.matrix.cell_child`` on the worker, which builds in
its own cache and keeps the evidence; the result says on which host and in which folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

from verifier.cluster.dask import DaskCluster, TaskOutcome, host_of
from verifier.matrix.cells import CellFailure, CellJob, CellResult

CELL_MODULE = "verifier.matrix.cell_child"


class DaskExecutor:
    def __init__(self, address: str) -> None:
        self.cluster = DaskCluster(address)
        self.name = self.cluster.name

    def _result(self, job: CellJob, outcome: TaskOutcome) -> CellResult:
        where = outcome.where
        if outcome.result is not None:
            result = CellResult.from_json(outcome.result)
            worker = where.worker if where else result.worker
            return replace(result, worker=worker, notes=result.notes + outcome.notes)
        host, _, scratch = outcome.scratch.partition(":")
        return CellResult(
            key=job.key,
            row=job.row,
            patch_set=job.patch_set,
            scenario=job.scenario,
            commit=job.commit,
            host=where.host if where else host or host_of(self.cluster.address),
            run_dir=scratch,
            started=time.time(),
            seconds=0.0,
            failure=CellFailure(int(outcome.status), outcome.failure),
            worker=where.worker if where else "",
            notes=outcome.notes,
        )

    def run(self, jobs: Sequence[CellJob]) -> Iterator[CellResult]:
        futures = [
            (self.cluster.submit(CELL_MODULE, job.to_json(), f"cell-{job.key[:12]}"), job)
            for job in jobs
        ]
        by_key = {future.key: job for future, job in futures}
        for future, outcome in self.cluster.as_completed(f for f, _ in futures):
            yield self._result(by_key[future.key], outcome)

    def close(self) -> None:
        self.cluster.close()
