"""Cells on an existing Dask distributed cluster, one whole machine per cell.

Trials that share a machine change the race timing, so each worker offers one
``machine`` resource and runs one task at a time (``dask worker --nthreads 1 --resources
machine=1``), and every cell asks for ``resources={"machine": 1}``. A worker must not run
as a daemonic process (the flood starts child processes): start it with ``--no-nanny``,
or set ``DASK_DISTRIBUTED__WORKER__DAEMON=False``.

The task is ``run_cell_json``: JSON in, JSON out. The worker builds in its own cache and
keeps the evidence; the result says on which host and in which directory.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from verifier.errors import EnvironmentMissing, ExitStatus, HarnessError
from verifier.matrix.cells import CellFailure, CellJob, CellResult
from verifier.matrix.run_cell import run_cell_json
from verifier.util.env import seconds_from_env

CONNECT_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_ENV = "VERIFIER_DASK_TIMEOUT"
RESOURCE = "machine"


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise EnvironmentMissing(
            "the dask executor needs the 'distributed' package: pip install -e '.[cluster]' "
            "(./bootstrap installs it)"
        ) from None
    return distributed


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
        if not _machine_workers(self.client):
            self.client.close()
            raise HarnessError(
                f"no worker of {self.name} offers the resource {RESOURCE}=1 (start workers "
                f"with: dask worker {address} --nthreads 1 --resources {RESOURCE}=1 --no-nanny)"
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
                    run_cell_json,
                    json.dumps(job.to_json()),
                    key=key,
                    pure=False,
                    resources={RESOURCE: 1},
                )
            )
        for future in self._as_completed(futures):
            job = by_key[future.key]
            try:
                yield CellResult.from_json(json.loads(future.result()))
            except Exception as error:  # the task's exception, or a lost worker
                status = getattr(error, "status", ExitStatus.HARNESS_ERROR)
                message = getattr(error, "message", f"{type(error).__name__}: {error}")
                yield CellResult(
                    key=job.key,
                    row=job.row,
                    patch_set=job.patch_set,
                    scenario=job.scenario,
                    commit=job.commit,
                    host="?",
                    run_dir="",
                    started=time.time(),
                    seconds=0.0,
                    failure=CellFailure(int(status), f"on {self.name}: {message}"),
                )

    def close(self) -> None:
        self.client.close()
