"""Where cells run: ``local`` (default: here, one cell at a time) or ``dask://HOST:PORT``
(an existing Dask distributed cluster, one cell per worker machine)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from verifier.errors import BadInput
from verifier.matrix.cells import CellJob, CellResult
from verifier.paths import CacheLayout

Progress = Callable[[str], None]
DASK_PREFIX = "dask://"


class Executor(Protocol):
    name: str

    def run(self, jobs: Sequence[CellJob]) -> Iterator[CellResult]:
        """Each job's result, in the order they finish."""
        ...

    def close(self) -> None: ...


def open_executor(spec: str, layout: CacheLayout, progress: Progress | None = None) -> Executor:
    if spec == "local":
        from verifier.matrix.local_executor import LocalExecutor

        return LocalExecutor(layout, progress)
    if spec.startswith(DASK_PREFIX) and len(spec) > len(DASK_PREFIX):
        from verifier.matrix.dask_executor import DaskExecutor

        return DaskExecutor("tcp://" + spec[len(DASK_PREFIX) :])
    raise BadInput(f"bad --executor {spec!r} (local or dask://HOST:PORT)")
