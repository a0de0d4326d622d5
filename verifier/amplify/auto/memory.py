"""What auto learned across runs: which stretch point preceded which class of hang.

A small JSON file keyed by stable point names (``store:allow_new_conns@main``), never
addresses, so a credit earned at one commit of a bisect (or one verify) is used at the
next: TSVD and DataCollider keep what they learned the same way. Hangs are counted per
hang class: a point that preceded a lost wake-up earns nothing for a hunt of the
self-deadlock; a hunt for any hang (class None) counts them all.

Credited points are ranked by their hazard (``hazard``): hangs per second of flood they
were stretched in, not by the count of hangs alone. Seen on upstream 1.4.6: a verify
credited lock:stats_lock@main for a lost wake-up after 60 s stretched, and
store:allow_new_conns@main for the self-deadlock after 1 s; ranked by count (a tie, then
by name) a bisect stretched stats_lock first, 12 times, and never hung.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import BadInput
from verifier.util.atomic import write_json

FORMAT = 1
HAZARD_PRIOR_S = 1.0  # prior exposure of a credited point (its hazard stays finite)


@dataclass
class PointRecord:
    trials: int = 0  # trials that stretched it
    triggers: int = 0  # stretches (sleeps) in them, summed
    hangs: dict[str, int] = field(default_factory=dict)  # hang class -> hangs it was named for
    hang_delay_us: int | None = None  # the delay of the latest hang it was named for
    point: dict[str, Any] | None = None  # the point named (Point.to_json), to rebase it
    stretched_s: float = 0.0  # seconds of flood in the trials that stretched it, summed

    def to_json(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "triggers": self.triggers,
            "hangs": dict(sorted(self.hangs.items())),
            "hang_delay_us": self.hang_delay_us,
            "point": self.point,
            "stretched_s": round(self.stretched_s, 3),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PointRecord:
        return cls(
            trials=int(data.get("trials", 0)),
            triggers=int(data.get("triggers", 0)),
            hangs={str(k): int(v) for k, v in dict(data.get("hangs", {})).items()},
            hang_delay_us=None if data.get("hang_delay_us") is None else int(data["hang_delay_us"]),
            point=data.get("point"),
            stretched_s=float(data.get("stretched_s", 0.0)),
        )


@dataclass
class AutoMemory:
    path: Path | None = None  # None: kept in memory only
    points: dict[str, PointRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> AutoMemory:
        """The memory at ``path``; empty when the file does not exist yet."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(f"auto memory {path} unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BadInput(f"auto memory {path}: not a format-{FORMAT} memory file")
        try:
            points = {str(k): PointRecord.from_json(v) for k, v in data["points"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadInput(f"auto memory {path} malformed: {exc!r}") from None
        return cls(path, points)

    def save(self, path: Path | None = None) -> None:
        """Write atomically (to ``path``, default where it was loaded from)."""
        target = path or self.path
        if target is None:
            raise BadInput("auto memory has no file to save to")
        write_json(
            target,
            {"format": FORMAT, "points": {k: v.to_json() for k, v in sorted(self.points.items())}},
        )

    def record(self, key: str) -> PointRecord:
        return self.points.setdefault(key, PointRecord())

    def credits(self, key: str, hunted: str | None) -> int:
        """Hangs of the hunted class (any class when None) this point was named for."""
        rec = self.points.get(key)
        if rec is None:
            return 0
        return sum(rec.hangs.values()) if hunted is None else rec.hangs.get(hunted, 0)

    def hazard(self, key: str, hunted: str | None) -> float:
        """Hangs of the hunted class per second stretched (a Gamma posterior mean with one
        second of prior exposure): a point that hung at once outranks one that hung once
        after a minute, and a credited point that keeps missing sinks."""
        rec = self.points.get(key)
        if rec is None:
            return 0.0
        return self.credits(key, hunted) / (rec.stretched_s + HAZARD_PRIOR_S)

    def note_trial(self, key: str, triggers: int, seconds: float = 0.0) -> None:
        rec = self.record(key)
        rec.trials += 1
        rec.triggers += triggers
        rec.stretched_s += max(seconds, 0.0)

    def note_hang(
        self, key: str, hang_class: str, delay_us: int, point: dict[str, Any] | None = None
    ) -> None:
        rec = self.record(key)
        rec.hangs[hang_class] = rec.hangs.get(hang_class, 0) + 1
        rec.hang_delay_us = delay_us
        if point is not None:
            rec.point = point

    def credited_points(self, hunted: str | None) -> list[dict[str, Any]]:
        """The points (as saved) credited for the hunted class, highest hazard first: what a
        new binary can stretch before any discovery (see ``Point.rebased``)."""
        ranked = sorted(
            (k for k, rec in self.points.items() if rec.point and self.credits(k, hunted) > 0),
            key=lambda k: (-self.hazard(k, hunted), k),
        )
        return [self.points[k].point for k in ranked]  # type: ignore[misc]
