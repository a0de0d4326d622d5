"""Seconds per hypothesis: switch what is stretched inside one live server.

Measured on upstream 1.4.6 (issue 20): the previous schedule gave each deck selection a
whole trial (60 s), and four of the first five stretched points that throttled the
flood to 190-1,700 connection cycles/s (from 11,000-15,000): minutes that exercised
almost nothing. When the race's point was stretched, the hang came 1.0 s into the
flood. So a trial now arms several hypotheses (each a point, or PCT's d-1 points
together) and the library keeps all but one muted (``counters.mute_rules``, through the
status page: no restart). The sweep (pure: fed the time, the flood's cycle count and the
rules' trigger counts once a probe interval) gives each hypothesis:

- ``dwell_s`` seconds (a stretched race that hits usually hits in one or two);
- less when it is idle (none of its rules fired in ``idle_s``: nothing is stretched,
  so nothing is learned by waiting) or when it stalls the flood (its rate below
  ``floor`` of the unstretched rate measured in the first ``warmup_s`` of the trial);
- another turn, once the round is over, if it neither stalled nor idled: the
  hypotheses that do stretch get the time left (successive halving's second round).

Exposure (``weighted_s``): each second counts in proportion to the flood achieved
(rate / unstretched rate, at most 1): a stall is not exposure. The verdict's bound is
computed over these seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DWELL_S = 3.0
IDLE_S = 1.0
WARMUP_S = 1.0
FLOOR = 0.25  # below a quarter of the unstretched rate, a hypothesis is a stall


@dataclass(frozen=True)
class Segment:
    """One hypothesis stretched for a while (or the unstretched warm-up: hypothesis -1)."""

    hypothesis: int
    start_s: float
    end_s: float
    cycles: int
    ended: str  # "dwell", "idle", "stall", "open" (the trial ended in it)

    @property
    def seconds(self) -> float:
        return max(0.0, self.end_s - self.start_s)

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "hypothesis": self.hypothesis,
            "start_s": round(self.start_s, 3),
            "seconds": round(self.seconds, 3),
            "cycles_per_s": round(self.rate, 1),
            "ended": self.ended,
        }


@dataclass
class Sweep:
    """Which rules are unmuted when (``hypotheses[i]``: rule indexes stretched together)."""

    hypotheses: Sequence[tuple[int, ...]]
    nrules: int
    dwell_s: float = DWELL_S
    idle_s: float = IDLE_S
    warmup_s: float = WARMUP_S
    floor: float = FLOOR
    segments: list[Segment] = field(default_factory=list)
    baseline_rate: float = 0.0
    current: int = -1  # -1: the warm-up (all muted)
    _start_s: float = 0.0
    _start_cycles: int = 0
    _start_triggers: tuple[int, ...] = ()
    _queue: list[int] = field(default_factory=list)
    _dropped: set[int] = field(default_factory=set)
    _started: bool = False

    def __post_init__(self) -> None:
        self._queue = list(range(len(self.hypotheses)))

    def all_muted(self) -> list[int]:
        return list(range(self.nrules))

    def mutes(self) -> list[bool]:
        """The mute word of every rule for the current hypothesis."""
        live = set(self.hypotheses[self.current]) if self.current >= 0 else set()
        return [i not in live for i in range(self.nrules)]

    def tick(self, now_s: float, cycles: int, triggers: Sequence[int]) -> list[bool] | None:
        """Advance; the new mute words when the hypothesis changes, else None."""
        if not self._started:
            self._started = True
            self._begin(-1, now_s, cycles, triggers)
            return None
        elapsed = now_s - self._start_s
        if self.current < 0:
            if elapsed < self.warmup_s:
                return None
            self.baseline_rate = (cycles - self._start_cycles) / elapsed if elapsed > 0 else 0.0
            return self._next(now_s, cycles, triggers, "dwell")
        rate = (cycles - self._start_cycles) / elapsed if elapsed > 0 else 0.0
        rules = self.hypotheses[self.current]
        fired = any(triggers[i] > self._start_triggers[i] for i in rules if i < len(triggers))
        if elapsed >= self.idle_s and not fired:
            self._dropped.add(self.current)
            return self._next(now_s, cycles, triggers, "idle")
        if (
            elapsed >= self.idle_s
            and self.baseline_rate > 0
            and rate < self.floor * (self.baseline_rate)
        ):
            self._dropped.add(self.current)
            return self._next(now_s, cycles, triggers, "stall")
        if elapsed >= self.dwell_s:
            return self._next(now_s, cycles, triggers, "dwell")
        return None

    def _begin(self, hypothesis: int, now_s: float, cycles: int, triggers: Sequence[int]) -> None:
        self.current = hypothesis
        self._start_s, self._start_cycles = now_s, cycles
        self._start_triggers = tuple(triggers) + (0,) * (self.nrules - len(triggers))

    def _close(self, now_s: float, cycles: int, ended: str) -> None:
        self.segments.append(
            Segment(self.current, self._start_s, now_s, cycles - self._start_cycles, ended)
        )

    def _next(
        self, now_s: float, cycles: int, triggers: Sequence[int], ended: str
    ) -> list[bool] | None:
        self._close(now_s, cycles, ended)
        if not self._queue:  # a new round: only the hypotheses that stretched and flowed
            self._queue = [i for i in range(len(self.hypotheses)) if i not in self._dropped]
        if not self._queue:
            self._begin(-1, now_s, cycles, triggers)  # nothing left: unstretched
            self.warmup_s = float("inf")
            return self.mutes()
        self._begin(self._queue.pop(0), now_s, cycles, triggers)
        return self.mutes()

    def finish(self, now_s: float, cycles: int) -> None:
        """Close the segment the trial ended in."""
        if self._started:
            self._close(now_s, cycles, "open")
            self._started = False

    # -- what the trial spent --------------------------------------------------------------
    def reached(self) -> set[int]:
        return {s.hypothesis for s in self.segments if s.hypothesis >= 0}

    def seconds_by_hypothesis(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for s in self.segments:
            if s.hypothesis >= 0:
                out[s.hypothesis] = out.get(s.hypothesis, 0.0) + s.seconds
        return out

    def weighted_fraction(self) -> float:
        """Exposure per second of flood: each segment weighted by its rate over the
        unstretched rate (at most 1); 1.0 when nothing was measured."""
        total = sum(s.seconds for s in self.segments)
        if total <= 0 or self.baseline_rate <= 0:
            return 1.0
        weighted = sum(
            s.seconds * (1.0 if s.hypothesis < 0 else min(1.0, s.rate / self.baseline_rate))
            for s in self.segments
        )
        return weighted / total

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline_cycles_per_s": round(self.baseline_rate, 1),
            "weighted_fraction": round(self.weighted_fraction(), 3),
            "segments": [s.to_json() for s in self.segments],
        }
