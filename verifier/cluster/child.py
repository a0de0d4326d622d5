"""Run ``python -m MODULE JOB.json RESULT.json`` as a child process of the calling thread.

A Dask worker started with its defaults runs under a nanny, as a daemonic multiprocessing
process, and a daemonic process may not have children: measured with ``dask worker ...
--nthreads 1 --resources machine=1``, every matrix cell failed with "daemonic processes are
not allowed to have children" as the flood started. A plain ``python -m`` child is no
multiprocessing child, so its flood may start. It gets SIGKILL when the thread waiting for
it dies (PR_SET_PDEATHSIG: a worker killed mid-task), and the server and flood processes
die with it (theirs), so nothing is left behind.

The child module's contract: read the job from its first argument, write the result to
its second, exit 0; anything else is a failure whose output is kept in a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import verifier
from verifier.paths import CACHE_ENV, CacheLayout
from verifier.util.atomic import write_json
from verifier.util.proc import die_with_parent, kill_group


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    result: dict[str, Any] | None  # the child's result, None when it wrote none
    log: Path  # its output
    scratch: Path  # its job, result and log

    @property
    def cause(self) -> str:
        """The child's last words: its last non-empty line of output, or how it ended."""
        if self.returncode < 0:
            return f"the child process was killed by {signal.Signals(-self.returncode).name}"
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            text = ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else "no output"
        return f"the child process exited with status {self.returncode}: {last}"


def _child_env(layout: CacheLayout) -> dict[str, str]:
    """This environment, with the same cache and the same verifier package as this process."""
    package_root = str(Path(verifier.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        CACHE_ENV: str(layout.root),
        "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
    }


STOP_POLL_S = 1.0  # how often a waiting task asks whether it is still wanted


def run_in_child(
    module: str,
    job: dict[str, Any],
    layout: CacheLayout,
    name: str,
    should_stop: Callable[[], bool] | None = None,
) -> ChildRun:
    """Run ``module`` on ``job`` in a child process and wait for it (its files go to a
    scratch folder under the cache's runs, named after ``name``). ``should_stop``, asked
    once a second, stops the child (SIGTERM, then SIGKILL) when it answers True: a task
    cancelled while it runs (Dask does not interrupt a running task) would otherwise soak
    on, its server with it, after nobody wants its answer."""
    scratch = layout.runs / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    scratch.mkdir(parents=True, exist_ok=True)
    job_path, result_path = scratch / "job.json", scratch / "result.json"
    log = scratch / "child.log"
    write_json(job_path, job)
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", module, str(job_path), str(result_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_child_env(layout),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            returncode = _wait(child, should_stop)
        except BaseException:
            kill_group(child)
            raise
    result = None
    if returncode == 0 and result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
    return ChildRun(returncode, result, log, scratch)


def _wait(child: subprocess.Popen[bytes], should_stop: Callable[[], bool] | None) -> int:
    while True:
        try:
            return child.wait(timeout=None if should_stop is None else STOP_POLL_S)
        except subprocess.TimeoutExpired:
            if should_stop is not None and should_stop():
                kill_group(child)
                return child.wait()
