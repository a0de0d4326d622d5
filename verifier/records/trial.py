"""What one trial hands to the verdict: typed records with one ``to_json`` each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from verifier.check.checker import CheckReport
from verifier.check.witness import Witness
from verifier.evidence.classify import Diagnosis
from verifier.evidence.sanitizer import SanitizerFinding
from verifier.records.timeline import Timeline
from verifier.stress.tally import ClientReport
from verifier.vocabulary import HangClass, HangProof, Liveness, TrialOutcome


@dataclass(frozen=True)
class FloodSummary:
    """The flood of one trial. ``loaded_s`` counts only the seconds in which every flood
    process ran (not paused, not dead, not spent): the exposure a PASS bound may claim."""

    cycles: int
    ops: int
    cycles_per_s: float
    ops_per_s: float
    errors: dict[str, int]
    processes: int
    loaded_s: float
    ended_early: str = ""  # why the flood stopped before the trial did ("" = it did not)

    def to_json(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "ops": self.ops,
            "cycles_per_s": round(self.cycles_per_s, 1),
            "ops_per_s": round(self.ops_per_s, 1),
            "errors": dict(self.errors),
            "processes": self.processes,
            "loaded_s": round(self.loaded_s, 3),
            "ended_early": self.ended_early,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FloodSummary:
        return cls(
            int(data["cycles"]),
            int(data["ops"]),
            float(data["cycles_per_s"]),
            float(data["ops_per_s"]),
            dict(data.get("errors", {})),
            int(data["processes"]),
            float(data.get("loaded_s", 0.0)),
            str(data.get("ended_early", "")),
        )


@dataclass
class TrialResult:
    index: int
    outcome: TrialOutcome
    soak_s: float  # seconds of flood at full strength (the exposure)
    run_dir: str
    time_to_hang_s: float | None = None  # flood start -> hang first seen (failed probe or cycle)
    last_good_s: float | None = None  # flood start -> last good reply on a new connection
    detection_latency_s: float | None = None  # last good reply -> HANG proven
    verdict_at_s: float | None = None  # flood start -> HANG proven
    diagnosis: Diagnosis | None = None
    crash_signal: str | None = None
    crash_backtrace: str = ""
    crash_message: str | None = None  # an exit, not a signal: the server's last fatal line
    emfile_episodes: int = 0  # listen_disabled_num increase during the soak
    amplifier_triggers: int = 0
    saturation_episodes: int = 0  # failed probes that recovered after the drain
    flood: FloodSummary | None = None
    timeline: Timeline = field(default_factory=Timeline)
    stretched: dict[str, Any] = field(default_factory=dict)  # auto: points and attribution
    probe_client: str = ""  # the client that carried the probes: telnet or socket
    flood_started_ns: int = 0  # CLOCK_MONOTONIC at flood start (the amplifier's timestamps)
    notes: list[str] = field(default_factory=list)  # what the trial could not do, and why
    error: str = ""
    clients: ClientReport | None = None  # what the workload's client groups saw
    events: list[str] = field(default_factory=list)  # the workload's events, as carried out
    server_counts: dict[str, int] = field(default_factory=dict)  # the server's own stats moved
    check: CheckReport | None = None  # the checker's judgement of the clients' history

    @property
    def witness(self) -> Witness | None:
        """The first proven wrong answer (a WRONG trial)."""
        return self.check.violations[0] if self.check and self.check.violations else None

    sanitizer: list[SanitizerFinding] = field(default_factory=list)  # its reports, in order

    @property
    def fatal_finding(self) -> SanitizerFinding | None:
        """The report a sanitizer ended the server with (ASan halts at its first)."""
        if self.outcome != TrialOutcome.CRASH:
            return None
        return next((f for f in self.sanitizer if f.fatal), None)

    @property
    def hang_class(self) -> HangClass | None:
        return self.diagnosis.hang_class if self.diagnosis else None

    @property
    def liveness(self) -> Liveness | None:
        return self.diagnosis.liveness if self.diagnosis else None

    @property
    def proof(self) -> HangProof | None:
        return self.diagnosis.proof if self.diagnosis else None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "outcome": str(self.outcome),
            "soak_s": self.soak_s,
            "run_dir": self.run_dir,
            "time_to_hang_s": self.time_to_hang_s,
            "last_good_s": self.last_good_s,
            "detection_latency_s": self.detection_latency_s,
            "verdict_at_s": self.verdict_at_s,
            "hang_class": None if self.hang_class is None else str(self.hang_class),
            "liveness": None if self.liveness is None else str(self.liveness),
            "proof": None if self.proof is None else str(self.proof),
            "diagnosis": self.diagnosis.to_json() if self.diagnosis else None,
            "crash_signal": self.crash_signal,
            "crash_backtrace": self.crash_backtrace,
            "crash_message": self.crash_message,
            "emfile_episodes": self.emfile_episodes,
            "amplifier_triggers": self.amplifier_triggers,
            "saturation_episodes": self.saturation_episodes,
            "flood": self.flood.to_json() if self.flood else None,
            "timeline": self.timeline.to_json(),
            "stretched": self.stretched,
            "probe_client": self.probe_client,
            "flood_started_ns": self.flood_started_ns,
            "notes": self.notes,
            "error": self.error,
            "clients": self.clients.to_json() if self.clients else None,
            "events": self.events,
            "server_counts": self.server_counts,
            "check": self.check.to_json() if self.check else None,
            "sanitizer": [f.to_json() for f in self.sanitizer],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialResult:
        return cls(
            index=int(data["index"]),
            outcome=TrialOutcome(data["outcome"]),
            soak_s=float(data["soak_s"]),
            run_dir=str(data["run_dir"]),
            time_to_hang_s=data.get("time_to_hang_s"),
            last_good_s=data.get("last_good_s"),
            detection_latency_s=data.get("detection_latency_s"),
            verdict_at_s=data.get("verdict_at_s"),
            diagnosis=Diagnosis.from_json(data["diagnosis"]) if data.get("diagnosis") else None,
            crash_signal=data.get("crash_signal"),
            crash_backtrace=data.get("crash_backtrace", ""),
            crash_message=data.get("crash_message"),
            emfile_episodes=int(data.get("emfile_episodes", 0)),
            amplifier_triggers=int(data.get("amplifier_triggers", 0)),
            saturation_episodes=int(data.get("saturation_episodes", 0)),
            flood=FloodSummary.from_json(data["flood"]) if data.get("flood") else None,
            timeline=Timeline.from_json(data.get("timeline")),
            stretched=dict(data.get("stretched") or {}),
            probe_client=data.get("probe_client", ""),
            flood_started_ns=int(data.get("flood_started_ns", 0)),
            notes=list(data.get("notes", [])),
            error=data.get("error", ""),
            clients=ClientReport.from_json(data.get("clients")),
            events=list(data.get("events", [])),
            server_counts={k: int(v) for k, v in (data.get("server_counts") or {}).items()},
            check=CheckReport.from_json(data["check"]) if data.get("check") else None,
            sanitizer=[SanitizerFinding.from_json(f) for f in data.get("sanitizer", [])],
        )
