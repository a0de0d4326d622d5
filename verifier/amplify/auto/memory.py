"""What auto learned across runs: which stretch point preceded which class of hang.

A small JSON file keyed by stable point names (``store:allow_new_conns@main``), never
addresses, so a credit earned at one commit of a bisect (or one verify) is used at the
next: TSVD and DataCollider keep what they learned the same way. Hangs are counted per
hang class: a point that preceded a lost wake-up earns nothing for a hunt of the
self-deadlock; a hunt for any hang (class None) counts them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import BadInput
from verifier.util.atomic import write_json

FORMAT = 1


@dataclass
class PointRecord:
    trials: int = 0  # trials that stretched it
    triggers: int = 0  # stretches (sleeps) in them, summed
    hangs: dict[str, int] = field(default_factory=dict)  # hang class -> hangs it was named for
    hang_delay_us: int | None = None  # the delay of the latest hang it was named for
    point: dict[str, Any] | None = None  # the point named (Point.to_json), to rebase it

    def to_json(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "triggers": self.triggers,
            "hangs": dict(sorted(self.hangs.items())),
            "hang_delay_us": self.hang_delay_us,
            "point": self.point,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PointRecord:
        return cls(
            trials=int(data.get("trials", 0)),
            triggers=int(data.get("triggers", 0)),
            hangs={str(k): int(v) for k, v in dict(data.get("hangs", {})).items()},
            hang_delay_us=None if data.get("hang_delay_us") is None else int(data["hang_delay_us"]),
            point=data.get("point"),
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

    def note_trial(self, key: str, triggers: int) -> None:
        rec = self.record(key)
        rec.trials += 1
        rec.triggers += triggers

    def note_hang(
        self, key: str, hang_class: str, delay_us: int, point: dict[str, Any] | None = None
    ) -> None:
        rec = self.record(key)
        rec.hangs[hang_class] = rec.hangs.get(hang_class, 0) + 1
        rec.hang_delay_us = delay_us
        if point is not None:
            rec.point = point

    def credited_points(self, hunted: str | None) -> list[dict[str, Any]]:
        """The points (as saved) credited for the hunted class, most credited first: what a
        new binary can stretch before any discovery (see ``Point.rebased``)."""
        ranked = sorted(
            (k for k, rec in self.points.items() if rec.point and self.credits(k, hunted) > 0),
            key=lambda k: (-self.credits(k, hunted), k),
        )
        return [self.points[k].point for k in ranked]  # type: ignore[misc]
