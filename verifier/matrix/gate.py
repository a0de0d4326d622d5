"""Judge every cell against its expectation, compare patch sets, decide one exit status.

A cell is MET, MISSED, SKIPPED or ERROR:
- a verdict that meets the expectation (``Expectation.met_by``, the same rule as
  ``verify --expect``: ``pass`` is about the scenario's bug, so a PASS that also saw
  another known hang meets it; that bug is listed, not hidden) is MET;
- NOT APPLICABLE (the build lacks the scenario's code, e.g. an older release) expected to
  pass is SKIPPED: there is nothing to soak, and JUnit readers show it as skipped without
  failing the pipeline. Expect ``n/a`` to require it, or ``pass`` and watch the skips;
- no verdict because the harness could not run the cell (a missing tool, an unreachable
  cluster, an ERROR verdict) is ERROR; no verdict because the cell's own inputs failed
  (a patch that does not apply, a build that fails) is MISSED: it can meet nothing;
- anything else is MISSED.

The exit status is decided here and only here: any MISSED cell -> GATE_FAILED (15); else
any ERROR -> HARNESS_ERROR (8); else SUCCESS.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from verifier.errors import ExitStatus
from verifier.matrix.cells import CellResult
from verifier.matrix.plan import PlannedCell
from verifier.matrix.spec import NOT_APPLICABLE_EXPECTATION
from verifier.verdict.compare import Comparison, compare, summarize
from verifier.verdict.verdict import Expectation, ExpectKind
from verifier.vocabulary import HangClass, VerdictKind


class CellState(enum.StrEnum):
    MET = "met"
    MISSED = "missed"
    SKIPPED = "skipped"
    ERROR = "error"


HARNESS_STATUSES = frozenset(
    {
        ExitStatus.HARNESS_ERROR,
        ExitStatus.ENV_MISSING,
        ExitStatus.NETWORK,
        ExitStatus.INTERRUPTED,
    }
)
_DECIDED = frozenset({VerdictKind.PASS, VerdictKind.HANG, VerdictKind.CRASH})


def judge(result: CellResult, expectation: str) -> CellState:
    if result.failure is not None:
        harness = result.failure.status in HARNESS_STATUSES
        return CellState.ERROR if harness else CellState.MISSED
    verdict = result.verdict
    assert verdict is not None
    if verdict.kind == VerdictKind.ERROR:
        return CellState.ERROR
    if expectation == NOT_APPLICABLE_EXPECTATION:
        met = verdict.kind == VerdictKind.NOT_APPLICABLE
        return CellState.MET if met else CellState.MISSED
    expected = Expectation.parse(expectation)
    if verdict.kind == VerdictKind.NOT_APPLICABLE and expected.kind == ExpectKind.PASS:
        return CellState.SKIPPED
    return CellState.MET if expected.met_by(verdict) else CellState.MISSED


@dataclass(frozen=True)
class JudgedCell:
    result: CellResult
    expectation: str
    state: CellState

    @property
    def classname(self) -> str:
        """JUnit classname: ``source@ref.patchset`` (e.g. debian@debian/1.6.18-1.with-fix)."""
        return f"{self.result.row}.{self.result.patch_set}"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.result.to_json(),
            "expectation": self.expectation,
            "state": str(self.state),
            "cached": self.result.cached,
            "evidence": self.result.evidence,
        }


@dataclass(frozen=True)
class RowComparison:
    row: str
    scenario: str
    comparison: Comparison

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "scenario": self.scenario, **self.comparison.to_json()}


@dataclass
class GateReport:
    name: str
    matrix: str  # the matrix file
    executor: str
    reference: str  # the reference patch set
    cells: list[JudgedCell]
    comparisons: list[RowComparison] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, state: CellState) -> int:
        return sum(1 for c in self.cells if c.state == state)

    @property
    def status(self) -> ExitStatus:
        if self.count(CellState.MISSED):
            return ExitStatus.GATE_FAILED
        if self.count(CellState.ERROR):
            return ExitStatus.HARNESS_ERROR
        return ExitStatus.SUCCESS

    def comparisons_for(self, row: str, scenario: str) -> list[Comparison]:
        return [c.comparison for c in self.comparisons if c.row == row and c.scenario == scenario]

    def summary_line(self) -> str:
        states = Counter(c.state for c in self.cells)
        cached = sum(1 for c in self.cells if c.result.cached)
        parts = [f"{states[s]} {s}" for s in CellState if states[s] or s == CellState.MISSED]
        return (
            f"{len(self.cells)} cells: {', '.join(parts)}; {len(self.cells) - cached} soaked, "
            f"{cached} cached"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "matrix": self.matrix,
            "executor": self.executor,
            "reference": self.reference,
            "status": int(self.status),
            "summary": self.summary_line(),
            "seconds": round(self.seconds, 3),
            "counts": {str(s): self.count(s) for s in CellState},
            "cells": [c.to_json() for c in self.cells],
            "comparisons": [c.to_json() for c in self.comparisons],
        }


def _exercised(result: CellResult) -> bool:
    return result.verdict is not None and result.verdict.kind in _DECIDED


def row_comparisons(
    cells: list[JudgedCell],
    reference: str,
    hunts: dict[str, HangClass | None],
    confidence: float,
) -> list[RowComparison]:
    """For each row and scenario, every other patch set against the reference patch set.
    ``hunts`` maps a scenario name to the hang class it hunts (another bug's hang does not
    count against a patch set)."""
    by_place = {(c.result.row, c.result.patch_set, c.result.scenario): c.result for c in cells}
    found = []
    for cell in cells:
        row, patch_set, scenario = cell.result.row, cell.result.patch_set, cell.result.scenario
        base = by_place.get((row, reference, scenario))
        if patch_set == reference or base is None:
            continue
        expected = hunts[scenario]
        comparison = compare(
            summarize(reference, base.trials, expected, exercised=_exercised(base)),
            summarize(patch_set, cell.result.trials, expected, exercised=_exercised(cell.result)),
            confidence,
        )
        found.append(RowComparison(row, scenario, comparison))
    return found


def build_gate(
    name: str,
    matrix: str,
    executor: str,
    planned: list[PlannedCell],
    results: dict[str, CellResult],
    hunts: dict[str, HangClass | None],
    confidence: float,
    seconds: float = 0.0,
) -> GateReport:
    """``results`` by cell key; every planned cell must have one."""
    cells = [
        JudgedCell(
            results[p.job.key].relabel(p.job, cached=results[p.job.key].cached),
            p.expectation,
            judge(results[p.job.key], p.expectation),
        )
        for p in planned
    ]
    reference = planned[0].reference if planned else ""
    return GateReport(
        name=name,
        matrix=matrix,
        executor=executor,
        reference=reference,
        cells=cells,
        comparisons=row_comparisons(cells, reference, hunts, confidence),
        seconds=seconds,
    )
