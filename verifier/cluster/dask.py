"""An existing Dask distributed cluster, one whole machine per task.

Trials that share a machine change the race timing, so each worker offers one
``machine`` resource and runs one task at a time (``dask worker ADDRESS --nthreads 1
--resources machine=1``), and every task asks for ``resources={"machine": 1}``. Workers may
run under their nanny (the default of ``dask worker``, dask-jobqueue, dask-kubernetes): the
task runs its work in a child process of its own (``verifier.cluster.child``).

A worker lost mid-task (killed, out of memory) gives no result: the scheduler gives the
task to another worker, which runs it again from the start. Each attempt logs a start event
(topic ``verifier-task``) naming its worker and host, so the coordinator can say so. A task
whose workers keep dying (the scheduler's ``allowed-failures``, 3 by default) fails,
naming them. The matrix (``verifier.matrix.dask_executor``), known-bugs and bisect
(``verifier.bisect.remote``) all submit through ``DaskCluster``.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from verifier.cluster.child import run_in_child
from verifier.errors import EnvironmentMissing, ExitStatus, HarnessError
from verifier.paths import CacheLayout, default_cache_dir
from verifier.util.env import seconds_from_env

CONNECT_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_ENV = "VERIFIER_DASK_TIMEOUT"
RESOURCE = "machine"
EVENT_TOPIC = "verifier-task"
DASK_PREFIX = "dask://"
STOPPED_WAIT_S = 30.0  # a cancelled task's child gets SIGTERM, then SIGKILL 2 s later


def stop_event(task: str) -> str:
    """The Dask Event that asks a running task to stop its child."""
    return f"verifier-stop-{task}"


def ended_event(task: str) -> str:
    """The Dask Event a task sets when its child is gone (stopped or finished)."""
    return f"verifier-ended-{task}"


def import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise EnvironmentMissing(
            "the dask executor needs the 'distributed' package: pip install -e '.[cluster]' "
            "(./bootstrap installs it)"
        ) from None
    return distributed


def host_of(address: str) -> str:
    return address.removeprefix("tcp://").rsplit(":", 1)[0] or address


@dataclass(frozen=True)
class Attempt:
    """One start of a task, as its worker logged it."""

    worker: str  # the worker's address
    host: str  # its host name

    def __str__(self) -> str:
        return f"worker {self.worker} on {self.host}"


def retry_notes(attempts: tuple[Attempt, ...]) -> tuple[str, ...]:
    """What a task's notes say when it ran more than once (every start but the last was
    lost with its worker, and counts for nothing)."""
    return tuple(
        f"{lost} was lost mid-run (attempt {n} of {len(attempts)}); it ran again from the "
        f"start on {attempts[-1]}; the lost attempt is not counted"
        for n, lost in enumerate(attempts[:-1], 1)
    )


@dataclass(frozen=True)
class TaskOutcome:
    """One task's answer: the child's result, or a one-line failure that names the worker,
    the cause and what to do."""

    result: dict[str, Any] | None
    attempts: tuple[Attempt, ...] = ()
    failure: str = ""
    status: int = ExitStatus.SUCCESS
    scratch: str = ""  # host:path of the child's job, result and output

    @property
    def where(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def notes(self) -> tuple[str, ...]:
        return retry_notes(self.attempts)


def child_task(module: str, job_json: str, name: str) -> str:
    """The task on a worker: log the start, run ``module`` on the job in a child process
    under the worker's own cache (``$VERIFIER_CACHE_DIR``); JSON out."""
    distributed = import_distributed()
    worker = distributed.get_worker()
    attempt = Attempt(worker.address, socket.gethostname())
    task = str(worker.get_current_task())
    worker.log_event(
        EVENT_TOPIC,
        {"task": task, "worker": attempt.worker, "host": attempt.host, "pid": os.getpid()},
    )
    layout = CacheLayout(default_cache_dir().expanduser().resolve())
    stop = distributed.Event(stop_event(task))
    try:
        run = run_in_child(module, json.loads(job_json), layout, name, should_stop=stop.is_set)
    finally:
        distributed.Event(ended_event(task)).set()
    return json.dumps(
        {
            "returncode": run.returncode,
            "result": run.result,
            "cause": "" if run.result is not None else run.cause,
            "scratch": f"{attempt.host}:{run.scratch}",
            "log": f"{attempt.host}:{run.log}",
        }
    )


@dataclass
class DaskCluster:
    """A client of the scheduler at ``address`` (``tcp://HOST:PORT``)."""

    address: str
    name: str = field(init=False)

    def __post_init__(self) -> None:
        distributed = import_distributed()
        self.name = DASK_PREFIX + self.address.removeprefix("tcp://")
        try:
            self.client = distributed.Client(
                self.address, timeout=seconds_from_env(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_S)
            )
        except (OSError, TimeoutError) as error:
            raise HarnessError(f"cannot reach the Dask scheduler at {self.name}: {error}") from None
        self._as_completed = distributed.as_completed
        self._killed_worker = distributed.KilledWorker
        if not self.machine_workers():
            self.client.close()
            raise HarnessError(
                f"no worker of {self.name} offers the resource {RESOURCE}=1 (start workers "
                f"with: dask worker {self.address} --nthreads 1 --resources {RESOURCE}=1)"
            )

    @classmethod
    def from_spec(cls, spec: str) -> DaskCluster:
        """``dask://HOST:PORT``."""
        return cls("tcp://" + spec.removeprefix(DASK_PREFIX))

    def machine_workers(self) -> list[str]:
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except TypeError:  # older distributed: every worker, no argument
            info = self.client.scheduler_info()
        return [
            address
            for address, worker in info.get("workers", {}).items()
            if worker.get("resources", {}).get(RESOURCE, 0) >= 1
        ]

    def submit(self, module: str, job: dict[str, Any], name: str, worker: str | None = None) -> Any:
        """Run ``module`` on ``job`` on one whole machine; a future. With ``worker``, on
        that one (it has built what the job needs) unless it is gone: the restriction is
        loose (``allow_other_workers``), so a lost worker's task still runs elsewhere, and
        work stealing may hand it to an idle worker while that one is busy."""
        return self.client.submit(
            child_task,
            module,
            json.dumps(job),
            name,
            key=f"verifier-{name}-{uuid.uuid4().hex[:8]}",
            pure=False,
            resources={RESOURCE: 1},
            workers=None if worker is None else [worker],
            allow_other_workers=worker is not None,
        )

    def as_completed(self, futures: Iterable[Any]) -> Iterator[tuple[Any, TaskOutcome]]:
        """Each future with its outcome, as they finish (futures may be added meanwhile
        through the returned iterator's ``add``: use ``completion``)."""
        for future in self._as_completed(list(futures)):
            yield future, self.outcome(future)

    def completion(self, futures: Iterable[Any] = ()) -> Any:
        """A distributed ``as_completed`` iterator (``add`` more futures as others finish)."""
        return self._as_completed(list(futures))

    def outcome(self, future: Any) -> TaskOutcome:
        """The finished ``future``'s outcome (it must be done)."""
        task = str(future.key)
        # the task set its "ended" Event for a cancel that never came: drop it from the
        # scheduler, which would otherwise keep one per task for the cluster's life
        import_distributed().Event(ended_event(task), client=self.client).clear()
        try:
            answer = json.loads(future.result())
        except Exception as error:  # the task's own exception, or workers lost every time
            return self._failed(task, error)
        attempts = tuple(self.attempts(task))
        where = str(attempts[-1]) if attempts else f"a worker of {self.name}"
        if answer["result"] is not None:
            return TaskOutcome(answer["result"], attempts, scratch=answer["scratch"])
        missing = answer["returncode"] == ExitStatus.ENV_MISSING
        return TaskOutcome(
            None,
            attempts,
            f"on {where}: {answer['cause']} (its output: {answer['log']}; install the "
            "verifier and its tools on that machine, or report this with that file)",
            ExitStatus.ENV_MISSING if missing else ExitStatus.HARNESS_ERROR,
            answer["scratch"],
        )

    def attempts(self, task: str) -> list[Attempt]:
        """Every start of ``task`` so far, oldest first (from the workers' events)."""
        return [
            Attempt(str(event["worker"]), str(event.get("host") or host_of(event["worker"])))
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
        return [Attempt(str(w), host_of(str(w))) for w in workers]

    def _failed(self, task: str, error: BaseException) -> TaskOutcome:
        attempts = tuple(self.attempts(task) or self._erred_on(task))
        if isinstance(error, self._killed_worker):
            lost = ", ".join(str(a) for a in attempts) or f"every worker of {self.name} tried"
            message = (
                f"lost with its worker on every attempt ({lost}): each died mid-run "
                "(killed, or out of memory); no attempt is counted. Read those workers' "
                "logs, then run the same command again"
            )
            return TaskOutcome(None, attempts, message, ExitStatus.HARNESS_ERROR)
        status = getattr(error, "status", ExitStatus.HARNESS_ERROR)
        cause = getattr(error, "message", f"{type(error).__name__}: {error}")
        place = str(attempts[-1]) if attempts else f"a worker of {self.name}"
        message = (
            f"on {place}: {cause} (install the verifier and its tools on every worker: "
            "pip install -e '.[cluster]'; that worker's log has the traceback)"
        )
        return TaskOutcome(None, attempts, message, int(status))

    def cancel(self, futures: Iterable[Any]) -> None:
        """Cancel ``futures``, and stop those already running: Dask does not interrupt a
        running task, so its child (and the server it soaks) would run to its end. Waits
        until each started one says its child is gone (at most ``STOPPED_WAIT_S``)."""
        futures = list(futures)
        self.client.cancel(futures)
        distributed = import_distributed()
        logged = {  # one read of the start events, not one per future
            event.get("task")
            for _, event in self.client.get_events(EVENT_TOPIC)
            if isinstance(event, dict)
        }
        started = [str(f.key) for f in futures if str(f.key) in logged]
        for task in started:
            distributed.Event(stop_event(task), client=self.client).set()
        for task in started:
            ended = distributed.Event(ended_event(task), client=self.client)
            ended.wait(timeout=STOPPED_WAIT_S)
            for name in (stop_event(task), ended_event(task)):
                distributed.Event(name, client=self.client).clear()

    def close(self) -> None:
        self.client.close()
