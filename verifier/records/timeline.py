"""What happened during one soak, second by second: the data behind a report's picture.

A sample is taken at every liveness probe (about once a second); events mark the moments
that matter (a saturation episode, the first failed probe, the proof of a hang, the end
of the flood). Times are seconds from the start of the flood.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class EventKind(enum.StrEnum):
    SATURATED = "saturated"  # a probe failed, then the drained server answered
    HANG_SUSPECTED = "hang-suspected"  # the first failed probe of the hang
    HANG_PROVEN = "hang-proven"  # the verdict: by a cycle, the state, or timing
    CRASH = "crash"
    FLOOD_ENDED = "flood-ended"  # the flood stopped before the soak did (dead or spent)
    EVENT = "event"  # the workload's schedule: a signal, a shutdown, a pause, a storm
    EXITED = "exited"  # the server exited after it was asked to stop
    WRONG = "wrong"  # the first operation of a proven wrong answer


@dataclass(frozen=True)
class Sample:
    t: float
    cycles_per_s: float  # flood connection cycles per second since the previous sample
    probe_ok: bool
    probe_latency_s: float
    emfile_episodes: int  # listen_disabled_num increase since the flood began (cumulative)
    amplifier_triggers: int  # cumulative; 0 when the amplifier cannot be read live

    def to_json(self) -> list[Any]:
        return [
            round(self.t, 3),
            round(self.cycles_per_s, 1),
            self.probe_ok,
            round(self.probe_latency_s, 4),
            self.emfile_episodes,
            self.amplifier_triggers,
        ]

    @classmethod
    def from_json(cls, row: list[Any]) -> Sample:
        t, rate, ok, latency, emfile, triggers = row
        return cls(float(t), float(rate), bool(ok), float(latency), int(emfile), int(triggers))


@dataclass(frozen=True)
class Event:
    t: float
    kind: EventKind
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "kind": str(self.kind), "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(float(data["t"]), EventKind(data["kind"]), str(data.get("detail", "")))


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def sample(self, sample: Sample) -> None:
        self.samples.append(sample)

    def mark(self, t: float, kind: EventKind, detail: str = "") -> None:
        self.events.append(Event(t, kind, detail))

    def to_json(self) -> dict[str, Any]:
        """Compact: samples as rows ``[t, cycles/s, probe ok, latency s, EMFILE, triggers]``."""
        return {
            "columns": [
                "t",
                "cycles_per_s",
                "probe_ok",
                "probe_latency_s",
                "emfile_episodes",
                "amplifier_triggers",
            ],
            "samples": [s.to_json() for s in self.samples],
            "events": [e.to_json() for e in self.events],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Timeline:
        if not data:
            return cls()
        return cls(
            [Sample.from_json(row) for row in data.get("samples", [])],
            [Event.from_json(e) for e in data.get("events", [])],
        )
