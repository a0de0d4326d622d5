"""Run one cell where this code runs (this machine, or a cluster worker): build the commit
with the patch set, verify the scenario, and return the result as data.

The job's patch and scenario texts are written into the cell's run directory first, so a
worker needs no shared files. The result names the host and the run directory, because
the evidence stays where the soak ran. On a cluster worker the cell runs in a child process
of its own (``verifier.cluster.child``), under the worker's own cache.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from verifier.build.builder import Builder, BuildRequest
from verifier.errors import EnvironmentMissing, VerifierError
from verifier.matrix.cells import CellFailure, CellJob, CellResult
from verifier.matrix.plan import open_source
from verifier.paths import CacheLayout
from verifier.scenario import Scenario, load_scenario, with_workload
from verifier.stress.workload_file import load_workload
from verifier.util.atomic import write_json, write_text
from verifier.verify import VerifyOptions, verify
from verifier.vocabulary import Sanitizer

Progress = Callable[[str], None]


def cell_run_dir(layout: CacheLayout, job: CellJob) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return layout.runs / f"matrix-{stamp}-{job.key[:12]}-{os.getpid()}"


def _materialise(job: CellJob, run_dir: Path) -> tuple[tuple[Path, ...], Path]:
    """Write the job's patches (original names, in order) and scenario into ``run_dir``."""
    patches = []
    for index, (name, text) in enumerate(job.patches, 1):
        path = run_dir / "inputs" / f"{index:02d}" / name
        write_text(path, text)
        patches.append(path)
    scenario = run_dir / "inputs" / "scenario" / f"{job.scenario}.toml"
    write_text(scenario, job.scenario_text)
    return tuple(patches), scenario


def cell_scenario(job: CellJob, scenario_file: Path, run_dir: Path) -> Scenario:
    """The cell's scenario, with the workload text the coordinator planned (so a worker
    whose recipes differ runs the same clients)."""
    scenario = load_scenario(str(scenario_file))
    if not job.workload_text:
        return scenario
    path = run_dir / "inputs" / "workload" / "workload.toml"
    write_text(path, job.workload_text)
    exercise = None if job.workload_override else scenario.exercise
    return with_workload(scenario, load_workload(str(path)), exercise)


def run_cell(job: CellJob, layout: CacheLayout, progress: Progress | None = None) -> CellResult:
    """One verify of the cell; a ``VerifierError`` becomes a failed cell, not an exception
    (except a missing tool: every other cell would fail the same way)."""
    started = time.time()
    run_dir = cell_run_dir(layout, job)
    host = socket.gethostname()

    def failed(status: int, message: str, commit: str = job.commit) -> CellResult:
        return CellResult(
            key=job.key,
            row=job.row,
            patch_set=job.patch_set,
            scenario=job.scenario,
            commit=commit,
            host=host,
            run_dir=str(run_dir),
            started=started,
            seconds=time.time() - started,
            failure=CellFailure(status, message),
        )

    try:
        patches, scenario_file = _materialise(job, run_dir)
        choice = open_source(job.source, layout)
        builder = Builder(layout.builds, layout.locks)
        sanitize = job.options.sanitize
        request = BuildRequest(
            source=choice,
            ref=job.commit,
            patches=patches,
            sanitizer=Sanitizer(sanitize) if sanitize else None,
            tls=job.options.tls,
        )
        options = VerifyOptions(
            scenario=cell_scenario(job, scenario_file, run_dir),
            amplify=job.options.amplify,
            trials=job.options.trials,
            soak_s=job.options.soak_s,
            confidence=job.options.confidence,
        )
        outcome = verify(builder, request, options, layout.tools, run_dir, progress)
    except EnvironmentMissing:
        raise
    except VerifierError as error:
        result = failed(int(error.status), error.message)
    else:
        result = CellResult(
            key=job.key,
            row=job.row,
            patch_set=job.patch_set,
            scenario=job.scenario,
            commit=outcome.prepared.commit,
            describe=outcome.build.describe if outcome.build else "",
            host=host,
            run_dir=str(run_dir),
            started=started,
            seconds=time.time() - started,
            verdict=outcome.verdict,
            trials=tuple(outcome.trials),
        )
    write_json(run_dir / "cell.json", result.to_json())
    return result
