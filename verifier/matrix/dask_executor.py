"""Cells on an existing Dask distributed cluster, one whole machine per cell.

Trials that share a machine change the race timing, so each worker offers one
``machine`` resource and runs one task at a time (``dask worker --nthreads 1 --resources
machine=1``), and every cell asks for ``resources={"machine": 1}``. Workers may run under
their nanny (the default of ``dask worker``, dask-jobqueue, dask-kubernetes): the task
runs the cell in a child process of its own (``verifier.matrix.cell_process``).

A worker lost mid-cell (killed, out of memory) is not a result: the scheduler gives the
task to another worker, which runs the cell again from the start, and the cell's notes say
so. Each attempt logs a start event (topic ``verifier-cell``) naming its worker and host,
which is how the coordinator knows. A cell whose workers keep dying (the scheduler's
``allowed-failures``, 3 by default) fails, naming them.

The task is ``run_cell_task``: JSON in, JSON out. The worker builds in its own cache and
keeps the evidence; the result says on which host and in which directory.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from verifier.errors import EnvironmentMissing, ExitStatus, HarnessError
from verifier.matrix.cell_process import run_cell_in_child
from verifier.matrix.cells import CellFailure, CellJob, CellResult
from verifier.paths import CacheLayout, default_cache_dir
from verifier.util.env import seconds_from_env

CONNECT_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_ENV = "VERIFIER_DASK_TIMEOUT"
RESOURCE = "machine"
EVENT_TOPIC = "verifier-cell"


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise EnvironmentMissing(
            "the dask executor needs the 'distributed' package: pip install -e '.[cluster]' "
            "(./bootstrap installs it)"
        ) from None
    return distributed


def _host_of(address: str) -> str:
    return address.removeprefix("tcp://").rsplit(":", 1)[0] or address


@dataclass(frozen=True)
class Attempt:
    """One start of a cell's task, as its worker logged it."""

    worker: str  # the worker's address
    host: str  # its host name

    def __str__(self) -> str:
        return f"worker {self.worker} on {self.host}"


def run_cell_task(job_json: str) -> str:
    """The cluster task: a ``CellJob`` as JSON in, a ``CellResult`` as JSON out, the cell
    run in a child process under the worker's own cache (``$VERIFIER_CACHE_DIR``)."""
    distributed = _import_distributed()
    job = CellJob.from_json(json.loads(job_json))
    worker = distributed.get_worker()
    attempt = Attempt(worker.address, socket.gethostname())
    worker.log_event(
        EVENT_TOPIC,
        {
            "task": str(worker.get_current_task()),
            "worker": attempt.worker,
            "host": attempt.host,
            "pid": os.getpid(),
        },
    )
    layout = CacheLayout(default_cache_dir().expanduser().resolve())
    result = run_cell_in_child(job, layout, str(attempt))
    return json.dumps(replace(result, worker=attempt.worker).to_json())


def _machine_workers(client: Any) -> list[str]:
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # older distributed: every worker, no argument
        info = client.scheduler_info()
    return [
        address
        for address, worker in info.get("workers", {}).items()
        if worker.get("resources", {}).get(RESOURCE, 0) >= 1
    ]


def retry_notes(attempts: Sequence[Attempt]) -> tuple[str, ...]:
    """What the cell's notes say when it ran more than once (every start but the last was
    lost with its worker, and counts for nothing)."""
    return tuple(
        f"{lost} was lost mid-cell (attempt {n} of {len(attempts)}); the cell ran again from "
        f"the start on {attempts[-1]}; the lost attempt is not counted"
        for n, lost in enumerate(attempts[:-1], 1)
    )


class DaskExecutor:
    def __init__(self, address: str) -> None:
        distributed = _import_distributed()
        self.address = address
        self.name = "dask://" + address.removeprefix("tcp://")
        try:
            self.client = distributed.Client(
                address, timeout=seconds_from_env(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_S)
            )
        except (OSError, TimeoutError) as error:
            raise HarnessError(f"cannot reach the Dask scheduler at {self.name}: {error}") from None
        self._as_completed = distributed.as_completed
        self._killed_worker = distributed.KilledWorker
        if not _machine_workers(self.client):
            self.client.close()
            raise HarnessError(
                f"no worker of {self.name} offers the resource {RESOURCE}=1 (start workers "
                f"with: dask worker {address} --nthreads 1 --resources {RESOURCE}=1)"
            )

    def attempts(self, task: str) -> list[Attempt]:
        """Every start of ``task`` so far, oldest first (from the workers' events)."""
        return [
            Attempt(str(event["worker"]), str(event.get("host") or _host_of(event["worker"])))
            for _, event in self.client.get_events(EVENT_TOPIC)
            if isinstance(event, dict) and event.get("task") == task
        ]

    def _erred_on(self, task: str) -> list[Attempt]:
        """The workers the scheduler saw ``task`` fail on (a task that failed before it
        could log its start, e.g. the verifier missing on the worker)."""
        try:
            workers = self.client.run_on_scheduler(
                lambda dask_scheduler: sorted(
                    getattr(dask_scheduler.tasks.get(task), "erred_on", None) or ()
                )
            )
        except Exception:  # an old scheduler, or one that refuses pickled functions
            return []
        return [Attempt(str(w), _host_of(str(w))) for w in workers]

    def _failed(self, job: CellJob, task: str, error: BaseException) -> CellResult:
        attempts = self.attempts(task) or self._erred_on(task)
        where = attempts[-1] if attempts else None
        if isinstance(error, self._killed_worker):
            lost = ", ".join(str(a) for a in attempts) or f"every worker of {self.name} tried"
            message = (
                f"the cell was lost with its worker on every attempt ({lost}): each died "
                "mid-cell (killed, or out of memory); no attempt is counted. Read those "
                "workers' logs, then run the matrix again"
            )
            status = ExitStatus.HARNESS_ERROR
        else:
            status = getattr(error, "status", ExitStatus.HARNESS_ERROR)
            cause = getattr(error, "message", f"{type(error).__name__}: {error}")
            place = str(where) if where else f"a worker of {self.name}"
            message = (
                f"on {place}: {cause} (install the verifier and its tools on every worker: "
                "pip install -e '.[cluster]'; that worker's log has the traceback)"
            )
        return CellResult(
            key=job.key,
            row=job.row,
            patch_set=job.patch_set,
            scenario=job.scenario,
            commit=job.commit,
            host=where.host if where else _host_of(self.address),
            run_dir="",
            started=time.time(),
            seconds=0.0,
            failure=CellFailure(int(status), message),
            worker=where.worker if where else "",
            notes=retry_notes(attempts) if len(attempts) > 1 else (),
        )

    def run(self, jobs: Sequence[CellJob]) -> Iterator[CellResult]:
        batch = uuid.uuid4().hex[:8]
        by_key: dict[str, CellJob] = {}
        futures = []
        for job in jobs:
            key = f"verifier-cell-{job.key}-{batch}"
            by_key[key] = job
            futures.append(
                self.client.submit(
                    run_cell_task,
                    json.dumps(job.to_json()),
                    key=key,
                    pure=False,
                    resources={RESOURCE: 1},
                )
            )
        for future in self._as_completed(futures):
            task = str(future.key)
            job = by_key[task]
            try:
                result = CellResult.from_json(json.loads(future.result()))
            except Exception as error:  # the task's exception, or workers lost every time
                yield self._failed(job, task, error)
                continue
            attempts = self.attempts(task)
            yield replace(result, notes=result.notes + retry_notes(attempts))

    def close(self) -> None:
        self.client.close()
