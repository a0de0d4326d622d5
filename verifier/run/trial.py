"""One soak trial: start the server, hold a connection, flood, probe every second.

A failed probe is only a suspicion (a saturated server also drops new connections).
First the proofs are tried, which need no waiting: a cycle in the wait-for graph read
from the live process (a deadlock), or the lost wake-up's state held steady after the
flood is drained. A proof ends the trial at once. Without one, the flood is paused and
drained; then a fresh probe (a new SYN) goes out every 0.25 s, and a HANG is confirmed
only when none answers for 3 s while the server has a free file descriptor (proof:
timing). From the failed probe on, the amplifier's stretches are paused (matches still
counted): a stall they made themselves (threads sleeping, one after another, inside a
lock the listener needs) drains, and only a real hang stays hung. If a probe answers, it
was saturation: the stretches and the flood resume. Measured on a
saturated 1.6.18 at -c 24: a single probe is not enough (a SYN dropped by a full accept
queue is only resent after 1 s and 3 s), and for up to 4 s after the drain the server can
still hold connections whose clients have left (their FIN is being resent), so its fd
table is full and it rightly accepts nothing.

Exposure counts only the seconds in which every flood process ran (``loaded_s``): the
soak lasts until that reaches ``soak_s``; a flood that dies or is spent ends the trial,
and says so. On a HANG the evidence is taken while the held connection stays open.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from verifier.amplify.spec import WatchRule
from verifier.build.sanitizer import report_files, runtime_env
from verifier.check.checker import check_files
from verifier.errors import EnvironmentMissing, VerifierError
from verifier.evidence.classify import Diagnosis
from verifier.evidence.collect import collect_hang, symbolise_crash
from verifier.evidence.last_words import last_words
from verifier.evidence.procfs import fd_usage
from verifier.evidence.sanitizer import read_reports
from verifier.evidence.stalled import tcp_rows
from verifier.limits import CONFIRM_WINDOW_S
from verifier.probe.parts import part_hung, probe_parts
from verifier.probe.telnet import ProbeTimeout, TelnetSession, client_kind, probe_new_connection
from verifier.records.timeline import EventKind, Sample
from verifier.records.trial import FloodSummary, TrialResult
from verifier.run.amplifier import AmplifierPlan
from verifier.run.events import (
    SHUTDOWN_BOUND_S,
    Due,
    EventClock,
    describe,
    send_shutdown,
    send_signal,
)
from verifier.run.gdb_hold import GdbHolder
from verifier.run.progress import ProgressWatch, Stuck, load_works
from verifier.run.proofs import CycleWatch, Prover, hold_bound
from verifier.run.server import HOST, MemcachedServer, ServerConfig
from verifier.run.stall_proof import StallFinding, look
from verifier.run.tls_files import make_certificate
from verifier.scenario import Scenario
from verifier.stress import Flood, FloodConfig, FloodStats
from verifier.stress.clients import GROUP_REPLY_TIMEOUT_S
from verifier.stress.workload_file import Event, EventAction
from verifier.util.atomic import write_json, write_text
from verifier.vocabulary import HangClass, HangProof, Liveness, Sanitizer, TrialOutcome

Progress = Callable[[str], None]
SEEN_BY_PROBE = "failed probe"
SEEN_BY_GRAPH = "wait-for graph read between probes"
PARTS_EVERY_S = 5.0  # a per-worker set/get/stats round this often (~10 ms on a healthy server)
PART_TIMEOUT_S = 1.0
FLOOD_BACKSTOP_S = 30.0  # the flood's own time bound beyond the soak (the trial stops it)
MAX_CYCLES_PER_S = 100_000  # the flood's count bound per second of soak: ~10x its best rate


@dataclass(frozen=True)
class TrialSettings:
    soak_s: float  # seconds of full-strength flood to reach
    threads: int
    server_args: tuple[str, ...] = ()  # from the build recipe (e.g. -o no_maxconns_fast)
    concurrency: int | None = None  # default: the scenario's
    flood_processes: int = 0  # 0: one per core
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 1.0
    confirm_probes: int = 2  # at least this many fresh probes must fail...
    confirm_timeout_s: float = 0.5
    confirm_interval_s: float = 0.25
    confirm_window_s: float = CONFIRM_WINDOW_S  # ...and every one sent in this window
    confirm_max_s: float = 20.0  # longest wait for a full fd table to free a descriptor
    drain_timeout_s: float = 2.0
    probe_client: str | None = None  # "telnet", "socket" or None (auto)
    hunted: HangClass | None = None  # for the record only: proofs name any class
    sanitizer: Sanitizer | None = None  # the build's: its runtime options, its reports read
    prove: bool = True  # try the wait-for graph and state proofs before timing
    watch_interval_s: float = 0.1  # the wait-for graph is read this often while flooding
    symbols: Path | None = None  # where the binary's symbols are (a debug file), if not in it
    debug_dir: Path | None = None  # where gdb finds separate debug info

    @property
    def wall_limit_s(self) -> float:
        """The longest a trial may run: saturation pauses do not count as exposure, so the
        soak may take longer than ``soak_s``, but never without end."""
        return 2 * self.soak_s + FLOOD_BACKSTOP_S


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.start


def _held_stats(held: TelnetSession | None, timeout_s: float = 1.0) -> dict[str, str] | None:
    if held is None:
        return None
    try:
        return held.stats(timeout_s)
    except ProbeTimeout:
        return None


class _Soak:
    """The probing loop of one trial and the decisions it takes."""

    def __init__(
        self,
        result: TrialResult,
        server: MemcachedServer,
        flood: Flood,
        held: TelnetSession,
        before: dict[str, str],
        settings: TrialSettings,
        prover: Prover,
        triggers: Callable[[], int],
        progress: Progress | None,
        pause_stretches: Callable[[bool], None],
        events: tuple[Event, ...] = (),
        tick: Callable[[float, int], None] = lambda now_s, cycles: None,
        workload: bool = False,
    ) -> None:
        self.result = result
        self.server = server
        self.flood = flood
        self.held = held
        self.settings = settings
        self.prover = prover
        self.triggers = triggers
        self.progress = progress
        self.pause_stretches = pause_stretches
        self.tick = tick  # the amplifier's, once a probe interval (auto switches stretches)
        self.disabled_at_start = int(before.get("listen_disabled_num", 0))
        self.before = before
        self.last_stats = before
        self.clock = _Clock()
        self.proven: Diagnosis | None = None
        self.ended_early = ""  # why the flood stopped before the soak did
        self.events = EventClock(events)
        self.resume_at: float | None = None  # a pause event's end
        self.stopped_by: Due | None = None  # the event that asked the server to stop
        self.background = ProgressWatch(load_works())
        self.parts_at = 0.0  # soak time of the last per-worker round
        self.workload = workload  # the scenario has client groups (per-worker rounds run)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        watch = CycleWatch(self.prover, self.settings.watch_interval_s, self.settings.prove)
        with watch:
            self._loop(watch)
        result = self.result
        result.soak_s = round(min(self.flood.snapshot().loaded_s, self.settings.soak_s), 3)
        if self.stopped_by is not None:
            self._judge_stop(self.stopped_by)
        elif result.outcome == TrialOutcome.CLEAN:
            if self.workload:
                self._stalled()
            if result.outcome == TrialOutcome.CLEAN:
                self._last_look()

    def _stalled(self) -> None:
        """The connections the flood kept after a reply timeout, read from the server's side
        while still open (``run/stall_proof.py``): a proven one is HANG part-hung, the
        rest are notes (the timeouts are counted per command anyway)."""
        report_dir = Path(self.flood.config.report_dir) if self.flood.config.report_dir else None
        if report_dir is None or not any(report_dir.glob("stalls-*.json")):
            return
        rows = tcp_rows(self.server.pid)
        try:
            text = self.held.command("stats conns", "END", 2.0)
        except ProbeTimeout:
            return  # the server did not answer the harness: the probes judge that
        findings = look(report_dir, text, rows, GROUP_REPLY_TIMEOUT_S)
        evidence = Path(self.result.run_dir) / "evidence"
        saved = _save_stalls(findings, evidence)
        proven = [f for f in findings if f.proven]
        for found in findings:
            if not found.proven:
                self.result.notes.append(
                    f"a reply timeout on {found.stall.group} (port {found.stall.local_port}) is "
                    f"no stall: {found.why_not}"
                )
        if not proven:
            return
        first, result, now = proven[0], self.result, self.clock.now()
        began = first.stall.at - first.stall.waited_s - (time.time() - now)
        self.proven = Diagnosis(
            HangClass.PART_HUNG,
            Liveness.PART_STUCK,
            first.sentence(),
            {
                "stalled": len(proven),
                "kept": len(findings),
                "findings": [f.to_json() for f in findings],
                "evidence": saved,
            },
            proof=HangProof.SOCKET,
        )
        result.outcome = TrialOutcome.HANG
        # a connection is stalled once it has waited out the reply timeout, not when its
        # batch was sent: told "0.0 s", a find-fix bisect of the TLS bug on upstream planned
        # soaks too short to ever prove a stall and named the commit before the fix
        result.time_to_hang_s = max(0.0, began) + GROUP_REPLY_TIMEOUT_S
        result.verdict_at_s = now
        result.detection_latency_s = now - result.time_to_hang_s
        result.timeline.mark(result.time_to_hang_s, EventKind.HANG_SUSPECTED, "reply timeout")
        result.timeline.mark(now, EventKind.HANG_PROVEN, str(HangProof.SOCKET))

    def _judge_stop(self, due: Due) -> None:
        """The server was asked to stop: it exits within the bound, or it is stuck."""
        result = self.result
        self.flood.stop()
        asked = self.clock.now()
        if self.await_exit():
            took = self.clock.now() - asked
            result.timeline.mark(self.clock.now(), EventKind.EXITED, f"in {took:.1f} s")
            result.notes.append(
                f"stopped as the workload asked ({describe(due)}): exited in {took:.1f} s"
            )
            return
        result.outcome = TrialOutcome.HANG
        result.time_to_hang_s = due.at_s
        result.verdict_at_s = self.clock.now()
        result.detection_latency_s = result.verdict_at_s - due.at_s
        result.timeline.mark(due.at_s, EventKind.HANG_SUSPECTED, describe(due))
        result.timeline.mark(result.verdict_at_s, EventKind.HANG_PROVEN, str(HangProof.EXIT))
        self.proven = Diagnosis(
            HangClass.STUCK_SHUTDOWN,
            Liveness.UNKNOWN,
            f"asked to stop ({describe(due)}), the server had not exited "
            f"{SHUTDOWN_BOUND_S:.0f} s later",
            {"stop": describe(due), "bound_s": SHUTDOWN_BOUND_S},
            proof=HangProof.EXIT,
        )

    def _loop(self, watch: CycleWatch) -> None:
        result, settings, flood = self.result, self.settings, self.flood
        flood.start()
        self.clock = _Clock()  # the soak starts when the flood runs
        result.flood_started_ns = time.monotonic_ns()  # the amplifier's clock
        next_probe = 0.0
        while True:
            stats = flood.snapshot()
            loaded = stats.loaded_s
            if loaded >= settings.soak_s:
                break
            ended = self._flood_ended(stats)
            if ended or self.clock.now() > settings.wall_limit_s:
                why = ended or f"full strength only {loaded:.1f} s in {self.clock.now():.0f} s"
                self.ended_early = why
                result.timeline.mark(self.clock.now(), EventKind.FLOOD_ENDED, why)
                break
            if self.server.exited() is not None:
                result.outcome = TrialOutcome.CRASH
                result.timeline.mark(self.clock.now(), EventKind.CRASH)
                break
            probe = probe_new_connection(
                HOST,
                self.server.port,
                settings.probe_timeout_s,
                settings.probe_client,
                watch.found,
            )
            if watch.found.is_set():
                self._proven_by_watch(watch)
                break
            if probe.ok:
                result.last_good_s = self.clock.now()
                if self._parts_due() and self._hung(self.clock.now(), flood):
                    break  # a worker or an operation does not answer: judged like a probe
            elif self._hung(self.clock.now(), flood):
                break
            self._sample(probe.ok, probe.latency_s, stats.cycles_per_s)
            self.tick(self.clock.now(), flood.snapshot().cycles)
            if result.outcome == TrialOutcome.HANG:  # background work found stuck
                break
            next_probe += settings.probe_interval_s
            if self._run_events(next_probe):
                break
            if watch.found.wait(max(0.0, next_probe - self.clock.now())):
                self._proven_by_watch(watch)
                break

    def _run_events(self, until: float) -> bool:
        """Carry out the workload's events due before ``until`` (waiting for each); True
        once one asked the server to stop (the soak then ends)."""
        while True:
            upcoming = [t for t in (self.events.next_at(), self.resume_at) if t is not None]
            if not upcoming or min(upcoming) >= until:
                return False
            time.sleep(max(0.0, min(upcoming) - self.clock.now()))
            now = self.clock.now()
            if self.resume_at is not None and self.resume_at <= now:
                self.flood.resume()
                self.resume_at = None
            for due in self.events.due(now):
                if self._event(due):
                    return True

    def _event(self, due: Due) -> bool:
        event, result = due.event, self.result
        answer = ""
        if event.action == EventAction.SIGNAL:
            send_signal(self.server.pid, event.signal)
        elif event.action in (EventAction.SHUTDOWN, EventAction.SHUTDOWN_GRACEFUL):
            graceful = event.action == EventAction.SHUTDOWN_GRACEFUL
            answer = send_shutdown(HOST, self.server.port, graceful)
        elif event.action == EventAction.PAUSE:
            self.flood.pause(self.settings.drain_timeout_s)
            self.resume_at = self.clock.now() + event.duration_s
        elif event.action == EventAction.DISCONNECT_STORM:
            self.flood.pause(self.settings.drain_timeout_s)
            self.flood.resume()
        text = describe(due, answer)
        result.events.append(text)
        result.timeline.mark(self.clock.now(), EventKind.EVENT, text)
        if event.stops_server and not answer.startswith(("ERROR", "CLIENT_ERROR", "not sent")):
            self.stopped_by = due
            return True
        return False

    def await_exit(self) -> bool:
        """After a stopping event: True if the server exited within the bound."""
        deadline = time.monotonic() + SHUTDOWN_BOUND_S
        while time.monotonic() < deadline:
            if self.server.exited() is not None:
                return True
            time.sleep(0.05)
        return self.server.exited() is not None

    def _stuck(self, stuck: Stuck) -> None:
        """Background work pending with its counters frozen: a HANG of that work."""
        result, now = self.result, self.clock.now()
        self.proven = Diagnosis(
            HangClass.STUCK_PROGRESS,
            Liveness.WORKERS_ALIVE,
            stuck.sentence(),
            {
                "work": stuck.work.name,
                "pending": list(stuck.work.pending),
                "frozen": stuck.counters,
                "seconds": round(stuck.seconds, 1),
            },
            proof=HangProof.PROGRESS,
        )
        result.outcome = TrialOutcome.HANG
        result.time_to_hang_s = stuck.since_s
        result.verdict_at_s = now
        result.detection_latency_s = now - stuck.since_s
        result.timeline.mark(stuck.since_s, EventKind.HANG_SUSPECTED, stuck.work.name)
        result.timeline.mark(now, EventKind.HANG_PROVEN, str(HangProof.PROGRESS))

    def _proven_by_watch(self, watch: CycleWatch) -> None:
        """A lock cycle (or leaked lock) seen between probes: proven when it was seen."""
        result = self.result
        self.proven = watch.diagnosis
        at = max(0.0, watch.at_monotonic - self.clock.start)
        result.outcome = TrialOutcome.HANG
        result.time_to_hang_s = result.verdict_at_s = at
        result.detection_latency_s = at - (result.last_good_s or 0.0)
        result.timeline.mark(at, EventKind.HANG_SUSPECTED, SEEN_BY_GRAPH)
        proof = watch.diagnosis.proof if watch.diagnosis else HangProof.CYCLE
        result.timeline.mark(at, EventKind.HANG_PROVEN, str(proof))

    @staticmethod
    def _flood_ended(stats: FloodStats) -> str:
        """Why the flood stopped flooding by itself ("" while it runs at full strength)."""
        if stats.processes_failed or stats.processes_alive < stats.processes:
            return f"{stats.processes - stats.processes_alive} flood process(es) died"
        if stats.finished:
            return "the flood reached its bound (cycle budget or time)"
        return ""

    def _hung(self, suspected_at: float, flood: Flood | None) -> bool:
        """After a failed probe: True when a hang is proven (the result then says how)."""
        result = self.result
        # judged with the stretches off: a stall they made drains, a real hang stays
        self.pause_stretches(True)
        proof = self._confirm(flood)
        if proof is None:
            result.saturation_episodes += 1
            result.timeline.mark(self.clock.now(), EventKind.SATURATED)
            self.pause_stretches(False)
            if flood is not None:
                flood.resume()
            return False
        result.outcome = (
            TrialOutcome.CRASH if self.server.exited() is not None else TrialOutcome.HANG
        )
        result.time_to_hang_s = suspected_at
        result.verdict_at_s = self.clock.now()
        result.detection_latency_s = result.verdict_at_s - (result.last_good_s or 0.0)
        result.timeline.mark(suspected_at, EventKind.HANG_SUSPECTED, SEEN_BY_PROBE)
        if result.outcome == TrialOutcome.HANG:
            result.timeline.mark(result.verdict_at_s, EventKind.HANG_PROVEN, str(proof))
        return True

    def _confirm(self, flood: Flood | None) -> HangProof | None:
        """Try the proofs (no waiting); else drain and probe for the confirmation window,
        trying the state proof again at each fresh probe (it needs the clients gone)."""
        settings, prover = self.settings, self.prover if self.settings.prove else None
        if prover is not None:
            self.proven = prover.cycle()
            if self.proven is not None:
                return self.proven.proof
        if flood is not None:
            flood.pause(settings.drain_timeout_s)
        start = window = time.monotonic()
        sent = 0
        while (
            sent < settings.confirm_probes or time.monotonic() - window < settings.confirm_window_s
        ):
            sent_at = time.monotonic()
            if prover is not None:  # the leaked lock and the spin: after cycle/state
                self.proven = (
                    prover.lost_wakeup(self.held)
                    or prover.cycle()
                    or prover.leaked_lock()
                    or prover.spin(self.held)
                )
                if self.proven is not None:
                    return self.proven.proof
            probe = probe_new_connection(
                HOST, self.server.port, settings.confirm_timeout_s, settings.probe_client
            )
            if probe.ok:
                return self._part_hung()
            sent += 1
            fds = fd_usage(self.server.pid)
            if fds is not None and fds.exhausted and sent_at - start < settings.confirm_max_s:
                window = time.monotonic()
            time.sleep(max(0.0, settings.confirm_interval_s - (time.monotonic() - sent_at)))
        return HangProof.TIMING

    def _parts_due(self) -> bool:
        """Every PARTS_EVERY_S, one round of per-worker set/get/stats: True when an
        operation failed on a connection that did connect (a refused or unanswered
        connect is the saturation the stats probe already judges). Only beside a
        workload: under a churn flood the listener's backlog holds such connections
        unaccepted whenever it hits EMFILE, and the stats probe covers that path."""
        now = self.clock.now()
        if not self.workload or now - self.parts_at < PARTS_EVERY_S:
            return False
        fds = fd_usage(self.server.pid)
        if fds is not None and fds.exhausted:
            return False
        self.parts_at = now
        results = probe_parts(HOST, self.server.port, self.settings.threads, PART_TIMEOUT_S)
        return any(r.failed_op not in ("", "connect") for r in results)

    def _part_hung(self) -> HangProof | None:
        """A stats probe answered: unless one worker or one operation stays silent in
        two rounds (with a descriptor free), it was saturation (None)."""
        fds = fd_usage(self.server.pid)
        if fds is not None and fds.exhausted:
            return None
        threads = self.settings.threads
        rounds = [probe_parts(HOST, self.server.port, threads, PART_TIMEOUT_S)]
        if not any(r.failed_op for r in rounds[0]):
            return None
        time.sleep(0.3)
        rounds.append(probe_parts(HOST, self.server.port, threads, PART_TIMEOUT_S))
        what = part_hung(rounds)
        if not what:
            return None
        self.proven = Diagnosis(
            HangClass.PART_HUNG,
            Liveness.PART_STUCK,
            what,
            {"rounds": [[r.failed_op or "ok" for r in results] for results in rounds]},
            proof=HangProof.TIMING,
        )
        return HangProof.TIMING

    def _sample(self, ok: bool, latency_s: float, cycles_per_s: float) -> None:
        result = self.result
        stats = _held_stats(self.held)
        if stats is not None:
            self.last_stats = stats
            stuck = self.background.observe(self.clock.now(), stats)
            if stuck is not None:
                self._stuck(stuck)
        result.emfile_episodes = (
            int(self.last_stats.get("listen_disabled_num", 0)) - self.disabled_at_start
        )
        now = self.clock.now()
        result.timeline.sample(
            Sample(now, cycles_per_s, ok, latency_s, result.emfile_episodes, self.triggers())
        )
        if self.progress is not None:
            self.progress(
                f"trial {result.index}  {self.flood.snapshot().render()}"
                f"  EMFILE {result.emfile_episodes:,}  saturated {result.saturation_episodes}"
            )

    def _last_look(self) -> None:
        """A hang at the very end still counts: one last check on a quiet server."""
        result = self.result
        self.flood.stop()
        if self.server.exited() is not None:
            result.outcome = TrialOutcome.CRASH
        else:
            probe = probe_new_connection(
                HOST, self.server.port, self.settings.probe_timeout_s, self.settings.probe_client
            )
            if not probe.ok:
                self._hung(result.soak_s, None)
        stats = _held_stats(self.held)
        if stats is not None:
            result.emfile_episodes = (
                int(stats.get("listen_disabled_num", 0)) - self.disabled_at_start
            )
            result.server_counts = counts_moved(self.before, stats)


# stats that are not counters of work done (they do not "move" with the workload)
_NOT_COUNTERS = frozenset({"pid", "uptime", "time", "version", "libevent", "pointer_size",
                           "rusage_user", "rusage_system", "max_connections", "threads",
                           "limit_maxbytes", "hash_power_level", "hash_bytes"})  # fmt: skip


def counts_moved(before: dict[str, str], after: dict[str, str]) -> dict[str, int]:
    """How far each of the server's own integer counters moved over the soak (gauges such
    as curr_items are differences too): what the server says it did, beside the clients'."""
    moved: dict[str, int] = {}
    for name, value in after.items():
        if name in _NOT_COUNTERS or not value.isdigit():
            continue
        start = before.get(name, "0")
        moved[name] = int(value) - (int(start) if start.isdigit() else 0)
    return moved


def run_trial(
    index: int,
    binary: Path,
    scenario: Scenario,
    amplifier: AmplifierPlan,
    settings: TrialSettings,
    trial_dir: Path,
    progress: Progress | None = None,
) -> TrialResult:
    """One fresh server, one soak. Every resource is released through one ExitStack, so
    a failure anywhere (flood summary, gdb holder, evidence) never skips server.stop()."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    status_file = trial_dir / "amplifier.status"
    result = TrialResult(
        index=index,
        outcome=TrialOutcome.CLEAN,
        soak_s=0.0,
        run_dir=str(trial_dir),
        probe_client=client_kind(settings.probe_client),
    )
    reports = sanitizer_dir(trial_dir, settings.sanitizer)
    env = {**amplifier.env(binary, status_file), **runtime_env(settings.sanitizer, reports)}
    scratch = None
    if scenario.workload is not None and scenario.workload.needs_scratch:
        # memcached runs as nobody, and the run folder may sit under root's 0700 cache
        scratch = Path(tempfile.mkdtemp(prefix="verifier-server-"))
    config = server_config(binary, scenario, settings, env, scratch)
    server = MemcachedServer(config, trial_dir / "server.log")

    def triggers() -> int:
        if not amplifier.rules or not status_file.exists():
            return 0
        with contextlib.suppress(VerifierError):
            return amplifier.triggers(status_file)
        return 0

    try:
        with contextlib.ExitStack() as stack:
            # registered first, so it runs last: after everything else, even on errors
            stack.callback(lambda: write_json(trial_dir / "trial.json", result.to_json()))
            if scratch is not None:
                stack.callback(shutil.rmtree, scratch, True)
            stack.callback(_read_sanitizer, result, reports, trial_dir)  # after the server
            stack.callback(server.stop)
            server.start()
            prover = Prover(
                server.pid,
                binary,
                _separate(binary, settings.symbols),
                min_hold_s=hold_bound(rule.delay_us for rule in amplifier.rules),
            )
            if settings.prove:
                prover.warm()
                if prover.disabled:
                    result.notes.append(prover.disabled)
            holder: GdbHolder | None = None
            if amplifier.gdb is not None:
                holder = GdbHolder(server.pid, amplifier.gdb, trial_dir)
                holder.start()
                stack.callback(_stop_holder, result, holder)
            else:
                stack.callback(_count_triggers, result, triggers)
            amplifier.check_armed(status_file)
            held = TelnetSession.open(HOST, server.port, 2.0, settings.probe_client)
            stack.callback(held.close)
            before = held.stats(2.0)
            flood = Flood(
                replace(
                    flood_config(server.port, scenario, settings, trial_dir / "clients"),
                    **server.endpoints(),
                )
            )
            soak = _Soak(
                result, server, flood, held, before, settings, prover, triggers, progress,
                functools.partial(amplifier.pause, status_file),
                scenario.workload.events if scenario.workload else (),
                functools.partial(amplifier.tick, status_file),
                scenario.workload is not None,
            )  # fmt: skip
            stack.callback(flood.stop)  # also when the summary below fails
            stack.callback(_summarise_flood, result, flood, soak)
            soak.run()
            if result.outcome == TrialOutcome.CLEAN and scenario.workload is not None:
                _judge_history(result, flood, scenario.workload.may_vanish, settings.soak_s)
            if result.outcome == TrialOutcome.HANG:
                _freeze_status(status_file)
                flood.stop()
                if holder is not None:
                    _stop_holder(result, holder)  # one tracer at a time: gdb takes evidence
                _take_evidence(result, server, held, scenario, settings, soak.proven)
                server.stop(grace_s=0.0)  # evidence taken: nothing left to shut down cleanly
            elif result.outcome == TrialOutcome.CRASH:
                _crash_details(result, server, binary, settings.symbols)
                _blame_the_amplifier(result, amplifier)
    except EnvironmentMissing:
        raise
    except VerifierError as error:
        result.outcome, result.error = TrialOutcome.ERROR, error.message
        write_json(trial_dir / "trial.json", result.to_json())
    return result


def server_config(
    binary: Path,
    scenario: Scenario,
    settings: TrialSettings,
    env: dict[str, str],
    scratch: Path | None = None,
) -> ServerConfig:
    """The server of a trial (also of the auto amplifier's discovery run); ``scratch`` is
    a folder the server may write (an extstore file) and read (the throwaway TLS
    certificate, made here when a client group speaks TLS)."""
    workload: tuple[str, ...] = ()
    tls = None
    if scenario.workload is not None:
        if scenario.workload.needs_scratch:
            if scratch is None:  # a caller with no trial folder (auto's discovery run)
                scratch = Path(tempfile.mkdtemp(prefix="verifier-server-"))
                atexit.register(shutil.rmtree, scratch, True)
            scratch.mkdir(parents=True, exist_ok=True)
            scratch.chmod(0o1777)  # the server runs as nobody
        if scenario.workload.tls and scratch is not None:
            tls = make_certificate(scratch)
        workload = scenario.workload.server.args(scratch=scratch)
    return ServerConfig(
        binary=binary,
        threads=settings.threads,
        maxconns=scenario.maxconns,
        extra_args=(*settings.server_args, *scenario.server_args, *workload),
        env=env,
        tls=tls,
    )


def flood_config(
    port: int, scenario: Scenario, settings: TrialSettings, report_dir: Path | None = None
) -> FloodConfig:
    """The flood of a trial: the scenario's churn and client groups, bounded in time and
    in cycles; what the groups saw goes to ``report_dir``."""
    duration = settings.soak_s + FLOOD_BACKSTOP_S
    churn = scenario.flood.concurrency
    return FloodConfig(
        port=port,
        concurrency=(settings.concurrency or churn) if churn else 0,
        processes=settings.flood_processes,
        duration_s=duration,  # the trial stops it; this is a backstop
        max_cycles=max(1, math.ceil(duration * MAX_CYCLES_PER_S)),
        mix=scenario.flood.mix,
        start_method="spawn",  # children must not inherit the held connection
        groups=scenario.workload.groups if scenario.workload else (),
        report_dir=str(report_dir) if report_dir is not None else "",
    )


AT_HANG = ".at-hang"


def _freeze_status(status_file: Path) -> None:
    """The amplifier's counters as they were when the hang was proven: closing the held
    connection later re-enables a lost wake-up's listener, whose next stretches would
    otherwise overwrite which point was stretched last before the hang."""
    with contextlib.suppress(OSError):
        frozen = status_file.with_name(status_file.name + AT_HANG)
        frozen.write_bytes(status_file.read_bytes())


def _save_stalls(findings: list[StallFinding], folder: Path) -> list[str]:
    """Each kept connection's rows, one file per connection; their names, run-relative."""
    saved = []
    for found in findings:
        path = folder / f"stall-{found.stall.local_port}.txt"
        folder.mkdir(parents=True, exist_ok=True)
        write_text(path, found.evidence_text())
        saved.append(f"evidence/{path.name}")
    return saved


def _stop_holder(result: TrialResult, holder: GdbHolder) -> None:
    counts = holder.stop()
    if counts:  # a hold skipped because the thread held the lock reached the window: closed
        result.amplifier_triggers = counts.get("holds", 0) + counts.get("owned", 0)


def _count_triggers(result: TrialResult, triggers: Callable[[], int]) -> None:
    result.amplifier_triggers = triggers()


def _summarise_flood(result: TrialResult, flood: Flood, soak: _Soak) -> None:
    stats = flood.stop()
    result.clients = flood.client_report()
    result.flood = FloodSummary(
        cycles=stats.cycles,
        ops=stats.ops,
        cycles_per_s=stats.mean_cycles_per_s,
        ops_per_s=stats.mean_ops_per_s,
        errors={str(kind): n for kind, n in stats.errors.nonzero().items()},
        processes=stats.processes,
        loaded_s=stats.loaded_s,
        ended_early=soak.ended_early,
    )


CHECK_BUDGET_SHARE = 0.25  # of the soak's time, at least CHECK_BUDGET_MIN_S
CHECK_BUDGET_MIN_S = 5.0


def _judge_history(result: TrialResult, flood: Flood, may_vanish: bool, soak_s: float) -> None:
    """The checked groups' history, judged: a proven violation makes the trial WRONG."""
    files = flood.history_files()
    if not files:
        return
    flood.stop()  # every process has flushed its history
    budget = max(CHECK_BUDGET_MIN_S, CHECK_BUDGET_SHARE * soak_s)
    report = check_files(files, may_vanish=may_vanish, budget_s=budget)
    result.check = report
    witness = result.witness
    if witness is not None:
        result.outcome = TrialOutcome.WRONG
        result.time_to_hang_s = witness.ops[0].call_s if witness.ops else None
        result.timeline.mark(result.time_to_hang_s or 0.0, EventKind.WRONG, witness.sentence)


def _separate(binary: Path, symbols: Path | None) -> Path | None:
    return symbols if symbols is not None and symbols != binary else None


def _take_evidence(
    result: TrialResult,
    server: MemcachedServer,
    held: TelnetSession,
    scenario: Scenario,
    settings: TrialSettings,
    proven: Diagnosis | None,
) -> None:
    held_stats = _held_stats(held, 2.0)
    diagnosis, _ = collect_hang(
        server.pid,
        Path(result.run_dir) / "evidence",
        held_stats=held_stats,
        held_local_port=held.local_port(),
        variables=scenario.variables,
        proven=proven,
        debug_dir=settings.debug_dir,
    )
    if held_stats is not None:
        base = int(held_stats.get("listen_disabled_num", 0))
        result.emfile_episodes = max(result.emfile_episodes, base)
    result.diagnosis = diagnosis


def sanitizer_dir(trial_dir: Path, sanitizer: Sanitizer | None) -> Path:
    """Where a sanitized server writes its reports. As root, memcached runs as nobody
    after its setuid, and the trial folder may sit under a 0700 parent (pytest's): then a
    fresh folder in the temporary directory, owned by nobody, moved into the trial folder
    afterwards (measured: else the report is lost, the sanitizer cannot open its file)."""
    folder = trial_dir / "sanitizer"
    if sanitizer is None:
        return folder
    if os.geteuid() != 0:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    staging = Path(tempfile.mkdtemp(prefix="verifier-sanitizer-"))
    os.chown(staging, pwd.getpwnam("nobody").pw_uid, -1)
    return staging


def _read_sanitizer(result: TrialResult, folder: Path, trial_dir: Path) -> None:
    """The reports, moved into ``trial_dir/sanitizer`` first when they were staged."""
    final = trial_dir / "sanitizer"
    if folder != final and folder.is_dir():
        final.mkdir(parents=True, exist_ok=True)
        for path in report_files(folder):
            shutil.move(path, final / path.name)
        shutil.rmtree(folder, ignore_errors=True)
    if final.is_dir():
        result.sanitizer = read_reports(report_files(final))


def _blame_the_amplifier(result: TrialResult, amplifier: AmplifierPlan) -> None:
    """memcached raises no SIGTRAP: one while the amplifier's hardware watchpoints are armed
    is the harness's failure (seen once in an auto warm-up on 1.4.5), never memcached's
    CRASH."""
    if result.crash_signal == "SIGTRAP" and any(isinstance(r, WatchRule) for r in amplifier.rules):
        result.outcome = TrialOutcome.ERROR
        result.error = (
            "the server died by SIGTRAP while the amplifier's hardware watchpoints were armed: "
            "a harness failure, not memcached's (it raises no SIGTRAP); evidence in "
            f"{result.run_dir}"
        )


def _crash_details(
    result: TrialResult, server: MemcachedServer, binary: Path, symbols: Path | None
) -> None:
    code = server.exited()
    if code is not None and code < 0:
        result.crash_signal = signal.Signals(-code).name
    else:
        result.crash_signal = f"exit status {code}"
    log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    result.crash_backtrace = symbolise_crash(binary, log, symbols)
    if code is not None and code >= 0:
        result.crash_message = last_words(log)
