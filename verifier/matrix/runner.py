"""Run a matrix: plan the cells, reuse cached ones, send the rest to an executor, judge.

Each result is cached as it arrives, so an interrupted matrix resumes where it stopped.
Cells with the same key (two patch sets with the same patches) run once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from verifier.build.builder import Builder
from verifier.matrix.cache import CellCache
from verifier.matrix.cells import CellJob, CellResult
from verifier.matrix.executor import Executor
from verifier.matrix.gate import GateReport, build_gate
from verifier.matrix.plan import PlannedCell, plan_cells
from verifier.matrix.spec import MatrixSpec
from verifier.paths import CacheLayout

CellDone = Callable[[CellResult, int, int], None]  # result, cells done, cells to run


def plan(spec: MatrixSpec, layout: CacheLayout) -> list[PlannedCell]:
    """The matrix's cells with their keys (imports sources, resolves refs)."""
    toolchain = Builder(layout.builds, layout.locks).toolchain(None).identity()
    return plan_cells(spec, layout, toolchain)


def run_matrix(
    spec: MatrixSpec,
    layout: CacheLayout,
    executor: Executor,
    *,
    use_cache: bool = True,
    on_cell: CellDone | None = None,
) -> GateReport:
    started = time.monotonic()
    planned = plan(spec, layout)
    cache = CellCache(layout.matrix_cells)
    results: dict[str, CellResult] = {}
    todo: dict[str, CellJob] = {}
    for cell in planned:
        key = cell.job.key
        if key in results or key in todo:
            continue
        cached = cache.get(key) if use_cache else None
        if cached is not None:
            results[key] = cached
        else:
            todo[key] = cell.job
    for done, result in enumerate(executor.run(list(todo.values())), 1):
        cache.put(result)
        results[result.key] = result
        if on_cell is not None:
            on_cell(result, done, len(todo))
    return build_gate(
        spec.name,
        str(spec.path),
        executor.name,
        planned,
        results,
        {s.name: s.hang_class for s in spec.scenarios},
        spec.confidence,
        time.monotonic() - started,
    )
