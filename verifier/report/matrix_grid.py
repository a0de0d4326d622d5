"""The matrix on a terminal: a grid (rows source@ref + patch set, columns scenarios), the
patch-set comparisons, the cells that need a look, and one summary line."""

from __future__ import annotations

from verifier.errors import ExitStatus
from verifier.matrix.cells import CellResult
from verifier.matrix.gate import CellState, GateReport, JudgedCell
from verifier.records.trial import TrialResult
from verifier.report.table import table
from verifier.vocabulary import TrialOutcome, VerdictKind


def deciding_trial(result: CellResult) -> TrialResult | None:
    """The trial whose hang or crash decided the verdict (None for a PASS)."""
    verdict = result.verdict
    if verdict is None:
        return None
    for trial in result.trials:
        if verdict.kind == VerdictKind.CRASH and trial.outcome == TrialOutcome.CRASH:
            return trial
        if verdict.kind == VerdictKind.WRONG and trial.outcome == TrialOutcome.WRONG:
            return trial
        if (
            verdict.kind == VerdictKind.HANG
            and trial.outcome == TrialOutcome.HANG
            and trial.hang_class == verdict.hang_class
        ):
            return trial
    return None


def verdict_text(result: CellResult) -> str:
    """``PASS < 0.75/s``, ``HANG listener-lost-wakeup at 1.2 s``, ``N/A``, ``BUILD FAILED``."""
    if result.failure is not None:
        try:
            return ExitStatus(result.failure.status).name.replace("_", " ")
        except ValueError:
            return f"ERROR {result.failure.status}"
    verdict = result.verdict
    assert verdict is not None
    trial = deciding_trial(result)
    if verdict.kind == VerdictKind.PASS:
        rate = verdict.rate_upper_bound_per_s
        text = "PASS" + (f" < {rate:.2g}/s" if rate is not None else "")
        others = sorted({b.label for b in verdict.other_bugs})
        return text + (f" (other bug: {', '.join(others)})" if others else "")
    if verdict.kind == VerdictKind.HANG:
        at = f" at {trial.time_to_hang_s:.1f} s" if trial and trial.time_to_hang_s else ""
        return f"HANG {verdict.hang_class}{at}"
    if verdict.kind == VerdictKind.CRASH:
        signal = f" {trial.crash_signal}" if trial and trial.crash_signal else ""
        at = f" at {trial.soak_s:.1f} s" if trial else ""
        return f"CRASH{signal}{at}"
    if verdict.kind == VerdictKind.WRONG:
        at = f" at {trial.time_to_hang_s:.1f} s" if trial and trial.time_to_hang_s else ""
        return f"WRONG {verdict.wrong_class}{at}"
    if verdict.kind == VerdictKind.NOT_APPLICABLE:
        return "N/A"
    return str(verdict.kind)


def cell_text(cell: JudgedCell) -> str:
    text = verdict_text(cell.result)
    if cell.state == CellState.MISSED:
        text += f"  MISSED (expected {cell.expectation})"
    elif cell.state == CellState.ERROR:
        text += "  (harness error)"
    elif cell.state == CellState.SKIPPED:
        text += "  (skipped)"
    return text + ("  cached" if cell.result.cached else "")


def grid(report: GateReport) -> str:
    scenarios: list[str] = []
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for cell in report.cells:
        result = cell.result
        if result.scenario not in scenarios:
            scenarios.append(result.scenario)
        rows.setdefault((result.row, result.patch_set), {})[result.scenario] = cell_text(cell)
    body = [
        [row, patch_set, *(texts.get(s, "") for s in scenarios)]
        for (row, patch_set), texts in rows.items()
    ]
    return table(body, ["source@ref", "patch set", *scenarios])


def render_matrix(report: GateReport) -> str:
    lines = [grid(report)]
    if report.comparisons:
        lines.append("")
        lines.extend(
            f"{c.scenario} on {c.row}: {c.comparison.sentence}" for c in report.comparisons
        )
    attention = [c for c in report.cells if c.state in (CellState.MISSED, CellState.ERROR)]
    if attention:
        lines.append("")
    for cell in attention:
        result = cell.result
        what = result.failure.message if result.failure else result.verdict.headline  # type: ignore[union-attr]
        lines.append(
            f"{cell.state.upper()} {result.row} {result.patch_set} x {result.scenario} "
            f"(expected {cell.expectation}): {what}; evidence {result.evidence}"
        )
    lines.append("")
    lines.append(report.summary_line())
    return "\n".join(lines)
