"""One cell in a child process of its own, started and waited for by the calling thread.

A Dask worker started with its defaults runs under a nanny, as a daemonic multiprocessing
process, and a daemonic process may not have children: measured with ``dask worker ...
--nthreads 1 --resources machine=1``, every cell failed with "daemonic processes are not
allowed to have children" as the flood started. A plain ``python -m
verifier.matrix.cell_child`` is no multiprocessing child, so its flood may start. It gets
SIGKILL when the thread waiting for it dies (PR_SET_PDEATHSIG: a worker killed mid-cell),
and the server and flood processes die with it (theirs), so nothing is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import verifier
from verifier.errors import ExitStatus
from verifier.matrix.cells import CellFailure, CellJob, CellResult
from verifier.paths import CACHE_ENV, CacheLayout
from verifier.util.atomic import write_json
from verifier.util.proc import die_with_parent, kill_group

CHILD_MODULE = "verifier.matrix.cell_child"


def _child_env(layout: CacheLayout) -> dict[str, str]:
    """This environment, with the same cache and the same verifier package as this process."""
    package_root = str(Path(verifier.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        CACHE_ENV: str(layout.root),
        "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
    }


def _cause(returncode: int, log: Path) -> str:
    """The child's last words: its last non-empty line of output, or how it ended."""
    if returncode < 0:
        return f"the cell's process was killed by {signal.Signals(-returncode).name}"
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = lines[-1].strip() if lines else "no output"
    return f"the cell's process exited with status {returncode}: {last}"


def run_cell_in_child(job: CellJob, layout: CacheLayout, where: str) -> CellResult:
    """Run ``job`` in a child process and return its result; a child that fails without
    one becomes a failed cell that names ``where`` it ran, the cause, and the log."""
    scratch = layout.runs / f"cell-{job.key[:12]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    scratch.mkdir(parents=True, exist_ok=True)
    job_path, result_path, log = scratch / "job.json", scratch / "result.json", scratch / "cell.log"
    write_json(job_path, job.to_json())
    started = time.time()
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE, str(job_path), str(result_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_child_env(layout),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            returncode = child.wait()
        except BaseException:
            kill_group(child)
            raise
    if returncode == 0 and result_path.is_file():
        return CellResult.from_json(json.loads(result_path.read_text(encoding="utf-8")))
    host = socket.gethostname()
    missing = returncode == ExitStatus.ENV_MISSING
    status = ExitStatus.ENV_MISSING if missing else ExitStatus.HARNESS_ERROR
    return CellResult(
        key=job.key,
        row=job.row,
        patch_set=job.patch_set,
        scenario=job.scenario,
        commit=job.commit,
        host=host,
        run_dir=str(scratch),
        started=started,
        seconds=time.time() - started,
        failure=CellFailure(
            int(status),
            f"{where}: {_cause(returncode, log)} (its output: {host}:{log}; install the "
            "verifier and its tools on that machine, or report this with that file)",
        ),
    )
