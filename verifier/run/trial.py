"""One soak trial: start the server, hold a connection, flood, probe every second.

A failed probe is only a suspicion (a saturated server also drops new connections). The
flood is paused and drained; then a fresh probe (a new SYN) goes out every 0.25 s, and a
HANG is confirmed only when none answers for 3 s while the server has a free file
descriptor. If one answers, it was saturation and the flood resumes. Measured on a
saturated 1.6.18 at -c 24: a single probe is not enough (a SYN dropped by a full accept
queue is only resent after 1 s and 3 s), and for up to 4 s after the drain the server
can still hold connections whose clients have left (their FIN is being resent), so its
fd table is full and it rightly accepts nothing.
On a HANG the evidence is taken while the held connection stays open.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import EnvironmentMissing, VerifierError
from verifier.evidence.collect import collect_hang, symbolise_crash
from verifier.evidence.procfs import fd_usage
from verifier.probe.telnet import ProbeTimeout, TelnetSession, probe_new_connection
from verifier.run.amplifier import AmplifierPlan
from verifier.run.gdb_hold import GdbHolder
from verifier.run.server import HOST, MemcachedServer, ServerConfig
from verifier.scenario import Scenario
from verifier.stress import Flood, FloodConfig
from verifier.util.atomic import write_json
from verifier.verdict.verdict import TrialResult

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrialSettings:
    soak_s: float
    threads: int
    server_args: tuple[str, ...] = ()  # from the build recipe (e.g. -o no_maxconns_fast)
    concurrency: int | None = None  # default: the scenario's
    flood_processes: int = 0  # 0: one per core
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 1.0
    confirm_probes: int = 2  # at least this many fresh probes must fail...
    confirm_timeout_s: float = 0.5
    confirm_interval_s: float = 0.25
    confirm_window_s: float = 3.0  # ...and every one sent in this window after the drain
    confirm_max_s: float = 20.0  # longest wait for a full fd table to free a descriptor
    drain_timeout_s: float = 2.0
    probe_client: str | None = None  # "telnet", "socket" or None (auto)


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


def _confirm_hang(settings: TrialSettings, server: MemcachedServer, flood: Flood | None) -> bool:
    """Pause and drain the flood (if it still runs), then probe with fresh connections: True
    only if every probe fails for ``confirm_window_s`` while the server has a free file
    descriptor. A full fd table (connections whose clients left but whose FIN the kernel
    is still resending) explains the silence, so the window restarts, up to
    ``confirm_max_s``."""
    if flood is not None:
        flood.pause(settings.drain_timeout_s)
    start = window = time.monotonic()
    sent = 0
    while sent < settings.confirm_probes or time.monotonic() - window < settings.confirm_window_s:
        sent_at = time.monotonic()
        probe = probe_new_connection(
            HOST, server.port, settings.confirm_timeout_s, settings.probe_client
        )
        if probe.ok:
            return False
        sent += 1
        fds = fd_usage(server.pid)
        if fds is not None and fds.exhausted and sent_at - start < settings.confirm_max_s:
            window = time.monotonic()
        time.sleep(max(0.0, settings.confirm_interval_s - (time.monotonic() - sent_at)))
    return True


def run_trial(
    index: int,
    binary: Path,
    scenario: Scenario,
    amplifier: AmplifierPlan,
    settings: TrialSettings,
    trial_dir: Path,
    progress: Progress | None = None,
) -> TrialResult:
    trial_dir.mkdir(parents=True, exist_ok=True)
    status_file = trial_dir / "amplifier.status"
    config = ServerConfig(
        binary=binary,
        threads=settings.threads,
        maxconns=scenario.maxconns,
        extra_args=(*settings.server_args, *scenario.server_args),
        env=amplifier.env(binary, status_file),
    )
    result = TrialResult(index=index, outcome="clean", soak_s=0.0, run_dir=str(trial_dir))
    holder: GdbHolder | None = None
    held: TelnetSession | None = None
    flood: Flood | None = None
    server = MemcachedServer(config, trial_dir / "server.log")
    try:
        server.start()
        if amplifier.gdb is not None:
            holder = GdbHolder(server.pid, amplifier.gdb, trial_dir)
            holder.start()
        amplifier.check_armed(status_file)
        held = TelnetSession.open(HOST, server.port, 2.0, settings.probe_client)
        before = held.stats(2.0)
        flood = Flood(
            FloodConfig(
                port=server.port,
                concurrency=settings.concurrency or scenario.flood.concurrency,
                processes=settings.flood_processes,
                duration_s=settings.soak_s + 30.0,  # the trial stops it; this is a backstop
                mix=scenario.flood.mix,
                start_method="spawn",  # children must not inherit the held connection
            )
        )
        _soak(result, server, flood, held, before, settings, progress)
        if result.outcome == "hang":
            if holder is not None:
                result.amplifier_triggers = holder.stop().get("holds", 0)
                holder = None
            _take_evidence(result, server, held, scenario, trial_dir)
        elif result.outcome == "crash":
            _crash_details(result, server, binary)
    except EnvironmentMissing:
        raise
    except VerifierError as error:
        result.outcome, result.error = "error", error.message
    finally:
        if flood is not None:
            result.flood = _flood_summary(flood)
        if holder is not None:
            result.amplifier_triggers = holder.stop().get("holds", 0)
        elif amplifier.rules and status_file.exists():
            with contextlib.suppress(VerifierError):
                result.amplifier_triggers = amplifier.triggers(status_file)
        if held is not None:
            held.close()
        server.stop()
        write_json(trial_dir / "trial.json", result.as_dict())
    return result


def _soak(
    result: TrialResult,
    server: MemcachedServer,
    flood: Flood,
    held: TelnetSession,
    before: dict[str, str],
    settings: TrialSettings,
    progress: Progress | None,
) -> None:
    flood.start()
    clock = _Clock()  # the soak starts when the flood runs
    disabled_at_start = int(before.get("listen_disabled_num", 0))
    last_stats = before
    next_probe = 0.0
    while clock.now() < settings.soak_s:
        if server.exited() is not None:
            result.outcome = "crash"
            break
        probe = probe_new_connection(
            HOST, server.port, settings.probe_timeout_s, settings.probe_client
        )
        if probe.ok:
            result.last_good_s = clock.now()
        else:
            suspected_at = clock.now()
            if _confirm_hang(settings, server, flood):
                result.outcome = "crash" if server.exited() is not None else "hang"
                result.time_to_hang_s = suspected_at
                result.verdict_at_s = clock.now()
                result.detection_latency_s = result.verdict_at_s - (result.last_good_s or 0.0)
                break
            result.saturation_episodes += 1
            flood.resume()
        stats = _held_stats(held)
        if stats is not None:
            last_stats = stats
        result.emfile_episodes = int(last_stats.get("listen_disabled_num", 0)) - disabled_at_start
        if progress is not None:
            progress(
                f"trial {result.index}  {flood.snapshot().render()}"
                f"  EMFILE {result.emfile_episodes:,}  saturated {result.saturation_episodes}"
            )
        next_probe += settings.probe_interval_s
        time.sleep(max(0.0, min(next_probe - clock.now(), settings.soak_s - clock.now())))
    result.soak_s = round(min(clock.now(), settings.soak_s), 3)
    if result.outcome == "clean":
        flood.stop()  # a hang at the very end still counts: one last probe on a quiet server
        if server.exited() is not None:
            result.outcome = "crash"
        elif _confirm_hang(settings, server, None):
            result.outcome, result.time_to_hang_s = "hang", result.soak_s
            result.verdict_at_s = clock.now()
            result.detection_latency_s = result.verdict_at_s - (result.last_good_s or 0.0)
        stats = _held_stats(held)
        if stats is not None:
            result.emfile_episodes = int(stats.get("listen_disabled_num", 0)) - disabled_at_start


def _take_evidence(
    result: TrialResult,
    server: MemcachedServer,
    held: TelnetSession,
    scenario: Scenario,
    trial_dir: Path,
) -> None:
    held_stats = _held_stats(held, 2.0)
    held_port = held.local_port()
    signature, _ = collect_hang(
        server.pid,
        trial_dir / "evidence",
        held_stats=held_stats,
        had_held=True,
        held_local_port=held_port,
        variables=scenario.variables,
    )
    if held_stats is not None:
        base = int(held_stats.get("listen_disabled_num", 0))
        result.emfile_episodes = max(result.emfile_episodes, base)
    result.hang_class = signature.hang_class
    result.liveness = signature.liveness
    result.signature = {
        "class": signature.hang_class,
        "key": signature.key(),
        "summary": signature.summary,
        "details": signature.details,
    }


def _crash_details(result: TrialResult, server: MemcachedServer, binary: Path) -> None:
    code = server.exited()
    if code is not None and code < 0:
        result.crash_signal = signal.Signals(-code).name
    else:
        result.crash_signal = f"exit status {code}"
    log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    result.crash_backtrace = symbolise_crash(binary, log)


def _flood_summary(flood: Flood) -> dict[str, object]:
    stats = flood.stop()
    return {
        "cycles": stats.cycles,
        "ops": stats.ops,
        "cycles_per_s": round(stats.mean_cycles_per_s, 1),
        "ops_per_s": round(stats.mean_ops_per_s, 1),
        "errors": {str(kind): n for kind, n in stats.errors.nonzero().items()},
        "processes": stats.processes,
    }
