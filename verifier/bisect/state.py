"""Bisection state on disk: saved atomically after every step, so Ctrl-C loses at most the
step under way and the same command resumes. The events inside replay the search."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import BadInput
from verifier.util.atomic import write_json
from verifier.verdict.verdict import OtherBug
from verifier.vocabulary import HangClass, ObservationKind, SkipCause

STATE_VERSION = 2


class Phase(enum.StrEnum):
    ENDPOINTS = "endpoints"
    SEARCH = "search"
    DONE = "done"


@dataclass
class StepRow:
    index: int  # model index
    sha: str
    subject: str
    kind: ObservationKind
    role: str  # "bad end", "good end", "calibration" or "step"
    seconds: float  # soak seconds (until the hang, for a hang)
    soak_planned_s: float
    build_seconds: float
    reason: str
    best_sha: str
    best_probability: float
    run_dir: str = ""
    cause: SkipCause | None = None
    stretched: str = ""  # --amplify auto: what the soak stretched (the point named, on a hang)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = str(self.kind)
        data["cause"] = None if self.cause is None else str(self.cause)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRow:
        data = dict(data)
        data["kind"] = ObservationKind(data["kind"])
        data["cause"] = SkipCause(data["cause"]) if data.get("cause") else None
        return cls(**data)


@dataclass
class BisectState:
    params: dict[str, Any]
    shas: list[str]
    find_fix: bool
    phase: Phase = Phase.ENDPOINTS
    reference_bug_key: str | None = None  # the bad end's bug: the one being bisected
    reference_class: HangClass | None = None
    bisector: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRow] = field(default_factory=list)
    other_bugs: list[OtherBug] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)  # shas lacking the scenario's code

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "params": self.params,
            "shas": self.shas,
            "find_fix": self.find_fix,
            "phase": str(self.phase),
            "reference_bug_key": self.reference_bug_key,
            "reference_class": None if self.reference_class is None else str(self.reference_class),
            "bisector": self.bisector,
            "steps": [row.to_json() for row in self.steps],
            "other_bugs": [bug.to_json() for bug in self.other_bugs],
            "notes": self.notes,
            "not_applicable": self.not_applicable,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BisectState:
        if data.get("version") != STATE_VERSION:
            raise BadInput(
                f"bisect state has version {data.get('version')}, need {STATE_VERSION} "
                "(start over with --restart)"
            )
        return cls(
            params=data["params"],
            shas=list(data["shas"]),
            find_fix=bool(data["find_fix"]),
            phase=Phase(data["phase"]),
            reference_bug_key=data.get("reference_bug_key"),
            reference_class=HangClass(data["reference_class"])
            if data.get("reference_class")
            else None,
            bisector=data.get("bisector", {}),
            steps=[StepRow.from_json(row) for row in data.get("steps", [])],
            other_bugs=[OtherBug.from_json(b) for b in data.get("other_bugs", [])],
            notes=list(data.get("notes", [])),
            not_applicable=list(data.get("not_applicable", [])),
        )


def save(path: Path, state: BisectState) -> None:
    write_json(path, state.to_json())


def load(path: Path) -> BisectState:
    try:
        return BisectState.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise BadInput(f"cannot read bisect state {path}: {exc}") from None
