"""Run the flood in worker processes and control it from the parent.

The parent owns two pieces of shared memory: a uint64 row of counters per worker process
(written by that process every tick) and one command word (run / pause / stop plus a
sequence number that workers echo back once they have carried it out). Children are daemon
processes with PR_SET_PDEATHSIG = SIGKILL; stop() always ends them by pid (command, then
SIGTERM, then SIGKILL) and reaps them.

Not thread-safe beyond this: every public method takes one lock. PR_SET_PDEATHSIG fires when
the *thread* that called start() exits, so call start() from a thread that outlives the flood.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import threading
import time
import weakref
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType

from verifier.errors import HarnessError
from verifier.stress.config import FloodConfig
from verifier.stress.stats import N_FIELDS, Field, FloodStats, ProcState, aggregate
from verifier.stress.tally import ClientReport, merge_tallies, tally_path
from verifier.stress.worker import CMD_PAUSE, CMD_RUN, CMD_STOP, encode_command, process_main
from verifier.util import pidlog

_POLL_S = 0.005
_START_TIMEOUT_S = 30.0


def _kill_all(procs: list[BaseProcess]) -> None:
    """Last resort (garbage collection, interpreter exit): SIGKILL and reap what is left."""
    for proc in procs:
        try:
            if proc.is_alive():
                proc.kill()
            proc.join(5.0)
        except ValueError:  # already closed
            pass


class Flood:
    """The connection-churn flood. ``with Flood(config) as flood:`` starts and stops it."""

    def __init__(self, config: FloodConfig) -> None:
        self.config = config
        self._ctx = multiprocessing.get_context(config.start_method)
        self._n = config.process_count
        self._counters = self._ctx.RawArray(ctypes.c_uint64, self._n * N_FIELDS)
        self._control = self._ctx.RawValue(ctypes.c_uint64, encode_command(CMD_RUN, 0))
        self._procs: list[BaseProcess] = []
        self._pids: list[int] = []
        self._seq = 0
        self._started_at = 0.0
        self._stopped_at: float | None = None
        self._last: FloodStats | None = None
        self._final: FloodStats | None = None
        self._lock = threading.RLock()
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker processes; returns once they all flood (HarnessError if not)."""
        with self._lock:
            if self._procs or self._final is not None:
                raise RuntimeError("a Flood can be started once")
            if self.config.use_uvloop:  # import before forking, so children need not
                with contextlib.suppress(ImportError):
                    import uvloop  # noqa: F401
            if self.config.report_dir:
                Path(self.config.report_dir).mkdir(parents=True, exist_ok=True)
            self._finalizer = weakref.finalize(self, _kill_all, self._procs)
            try:
                for index in range(self._n):
                    proc = self._ctx.Process(
                        target=process_main,
                        args=(self.config, index, self._counters, self._control, os.getpid()),
                        name=f"verifier-flood-{index}",
                        daemon=True,
                    )
                    proc.start()
                    self._procs.append(proc)
                    assert proc.pid is not None
                    self._pids.append(proc.pid)
                    pidlog.record(proc.pid, "flood worker")
                self._wait_started()
            except BaseException:
                self._terminate(grace_s=0.0)
                raise
            self._started_at = time.monotonic()

    def _wait_started(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            raw = self._counters[:]
            pending = False
            for index, proc in enumerate(self._procs):
                state = raw[index * N_FIELDS + Field.STATE]
                if state == ProcState.FAILED or (
                    state == ProcState.STARTING and not proc.is_alive()
                ):
                    raise HarnessError(
                        f"flood worker process {index} failed to start "
                        f"(exit code {proc.exitcode}; see its stderr)"
                    )
                pending = pending or state == ProcState.STARTING
            if not pending:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"flood workers not up after {_START_TIMEOUT_S:.0f} s")
            time.sleep(_POLL_S)

    def stop(self, grace_s: float = 2.0) -> FloodStats:
        """Stop and reap every worker process; the final stats. Safe to call twice. Client
        groups get at least 5 s to drain and write what they saw."""
        if self.config.groups:
            grace_s = max(grace_s, 5.0)
        with self._lock:
            if self._final is not None:
                return self._final
            if not self._procs:  # never started
                self._final = self._snapshot()
                return self._final
            self._terminate(grace_s)
            self._stopped_at = time.monotonic()
            self._final = self._snapshot()
            for proc in self._procs:
                proc.close()
            return self._final

    def _terminate(self, grace_s: float) -> None:
        """Ask to stop; after ``grace_s`` SIGTERM, then SIGKILL; join all. Never leaves one."""
        try:
            self._command(CMD_STOP)
            deadline = time.monotonic() + grace_s
            for proc in self._procs:
                proc.join(max(0.0, deadline - time.monotonic()))
            for proc in self._procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in self._procs:
                proc.join(1.0)
        finally:  # also on KeyboardInterrupt in the middle
            for proc in self._procs:
                if proc.is_alive():
                    proc.kill()
                proc.join(5.0)
            if self._finalizer is not None:
                self._finalizer.detach()

    def __enter__(self) -> Flood:
        with self._lock:
            if not self._procs:
                self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control -----------------------------------------------------------------------

    def _command(self, command: int) -> int:
        self._seq += 1
        self._control.value = encode_command(command, self._seq)
        return self._seq

    def pause(self, drain_timeout_s: float = 2.0) -> bool:
        """Close every connection and stop connecting; True once all processes have drained,
        False if ``drain_timeout_s`` passed first. Finished processes count as drained."""
        with self._lock:
            self._require_running_or_done()
            seq = self._command(CMD_PAUSE)
            deadline = time.monotonic() + drain_timeout_s
            while True:
                raw = self._counters[:]
                drained = True
                for index, proc in enumerate(self._procs):
                    row = index * N_FIELDS
                    state = raw[row + Field.STATE]
                    if state in (ProcState.DONE, ProcState.FAILED) or not proc.is_alive():
                        continue
                    if raw[row + Field.ACK] < seq or state != ProcState.PAUSED:
                        drained = False
                        break
                if drained:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL_S)

    def resume(self) -> None:
        """Flood again after pause() (until the bounds; paused time does not count)."""
        with self._lock:
            self._require_running_or_done()
            self._command(CMD_RUN)

    def wait(self, timeout_s: float | None = None, poll_s: float = 0.05) -> bool:
        """Block until the flood ends by itself (a bound reached); False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.running:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
        return True

    def _require_running_or_done(self) -> None:
        if not self._procs:
            raise RuntimeError("flood not started")
        if self._final is not None:
            raise RuntimeError("flood stopped")

    # -- observation -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from start() until every process is done (bound reached) or stop()."""
        with self._lock:
            if not self._procs or self._final is not None:
                return False
            raw = self._counters[:]
            return any(
                proc.is_alive()
                and raw[i * N_FIELDS + Field.STATE] in (ProcState.RUNNING, ProcState.PAUSED)
                for i, proc in enumerate(self._procs)
            )

    def client_report(self) -> ClientReport | None:
        """What the workload's client groups saw (after stop(); None without groups)."""
        if not self.config.groups or not self.config.report_dir:
            return None
        directory = Path(self.config.report_dir)
        return merge_tallies((tally_path(directory, i) for i in range(self._n)), self._n)

    def history_files(self) -> list[Path]:
        """The checked groups' histories, one file per process that recorded any."""
        if not self.config.report_dir:
            return []
        return sorted(Path(self.config.report_dir).glob("history-*.jsonl"))

    @property
    def pids(self) -> tuple[int, ...]:
        """Worker process ids (also after stop(), for checking they are gone)."""
        return tuple(self._pids)

    def snapshot(self) -> FloodStats:
        """Totals so far and rates since the previous snapshot() (or start)."""
        with self._lock:
            if self._final is not None:
                return self._final
            return self._snapshot()

    def _snapshot(self) -> FloodStats:
        raw = self._counters[:]
        alive = [proc.is_alive() for proc in self._procs]
        alive += [False] * (self._n - len(alive))
        if not self._started_at:
            elapsed = 0.0
        else:
            elapsed = (self._stopped_at or time.monotonic()) - self._started_at
        stats = aggregate(
            raw, processes=self._n, elapsed_s=elapsed, alive=alive, previous=self._last
        )
        self._last = stats
        return stats
