"""The known-bugs suite on a terminal: one line per bug (applicable, verdict, time to
expose, evidence), the cells' text from the matrix's renderer, and the gate's summary."""

from __future__ import annotations

from verifier.knownbugs.spec import KnownBug
from verifier.knownbugs.suite import SuiteReport
from verifier.matrix.gate import CellState
from verifier.report.matrix_grid import cell_text, deciding_trial
from verifier.report.table import table


def _expose(report: SuiteReport, bug_id: str) -> str:
    trial = deciding_trial(report.cell(bug_id).result)
    if trial is None:
        return ""
    seconds = trial.time_to_hang_s if trial.time_to_hang_s is not None else trial.soak_s
    return f"{seconds:.1f} s" if seconds is not None else ""


def render_suite(report: SuiteReport) -> str:
    rows = []
    for decision in report.decisions:
        cell = report.cell(decision.bug.id)
        soaked = cell.state != CellState.SKIPPED
        rows.append(
            [
                decision.bug.id,
                decision.bug.shapes,
                f"{decision.state}" + ("" if soaked else f": {decision.reason}"),
                cell_text(cell) if soaked else "-",
                _expose(report, decision.bug.id),
                cell.result.evidence if soaked else "",
            ]
        )
    headers = ["bug", "class", "applicable", "verdict", "time to expose", "evidence"]
    lines = [f"{report.row} (commit {report.commit[:12]}, version {report.version})", ""]
    lines.append(table(rows, headers))
    for cell in report.gate.cells:
        if cell.state in (CellState.MISSED, CellState.ERROR):
            result = cell.result
            what = result.failure.message if result.failure else result.verdict.headline  # type: ignore[union-attr]
            lines.append(f"{cell.state.upper()} {result.scenario}: {what}")
    soaked = [c for c in report.gate.cells if c.state != CellState.SKIPPED]
    states = ", ".join(
        f"{sum(c.state == s for c in soaked)} {s}" for s in CellState if s != CellState.SKIPPED
    )
    cached = sum(c.result.cached for c in soaked)
    lines.append("")
    lines.append(
        f"{len(report.gate.cells)} bugs: {len(soaked)} run ({states}; {cached} cached), "
        f"{len(report.gate.cells) - len(soaked)} skipped"
    )
    return "\n".join(lines)


def render_bug_list(bugs: list[KnownBug]) -> str:
    def release(version: tuple[int, int, int] | None) -> str:
        return "-" if version is None else ".".join(map(str, version))

    rows = [
        [
            bug.id + (" (control)" if bug.control else ""),
            bug.shapes,
            ", ".join(bug.fixed_by) or "-",
            release(bug.first_bad),
            release(bug.first_fixed),
            f"scenario {bug.scenario.name}" if bug.scenario else f"workload {bug.workload}",
            ", ".join(bug.needs) or "-",
        ]
        for bug in bugs
    ]
    headers = ["bug", "class", "fixed by", "first bad", "first fixed", "reached by", "needs"]
    return table(rows, headers)
