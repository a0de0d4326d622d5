"""Bisection state on disk: saved atomically after every step, so Ctrl-C loses at most the
step under way and the same command resumes. The events inside replay the search."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import BadInput
from verifier.util.atomic import write_json

STATE_VERSION = 1


@dataclass
class StepRow:
    index: int  # model index
    sha: str
    subject: str
    kind: str  # hang | clean | other-bug | skip
    role: str  # "bad end", "good end", "calibration" or "step"
    seconds: float  # soak seconds (until the hang, for a hang)
    soak_planned_s: float
    build_seconds: float
    reason: str
    best_sha: str
    best_probability: float
    run_dir: str = ""


@dataclass
class BisectState:
    params: dict[str, Any]
    shas: list[str]
    find_fix: bool
    phase: str = "endpoints"  # endpoints | search | done
    reference_key: str | None = None
    reference_class: str | None = None
    bisector: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRow] = field(default_factory=list)
    other_bugs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)  # shas lacking the scenario's code

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = STATE_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BisectState:
        if data.get("version") != STATE_VERSION:
            raise BadInput(f"bisect state has version {data.get('version')}, need {STATE_VERSION}")
        data = {k: v for k, v in data.items() if k != "version"}
        data["steps"] = [StepRow(**row) for row in data.get("steps", [])]
        return cls(**data)


def save(path: Path, state: BisectState) -> None:
    write_json(path, state.to_dict())


def load(path: Path) -> BisectState:
    try:
        return BisectState.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise BadInput(f"cannot read bisect state {path}: {exc}") from None
