"""The bisect report: a table of steps, a JSON document, and the final line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verifier.bisect.session import Conclusion
from verifier.bisect.state import BisectState, StepRow
from verifier.report.table import table
from verifier.source.git_source import GitSource
from verifier.util.atomic import write_json
from verifier.vocabulary import ObservationKind

STEP_HEADERS = ["#", "role", "commit", "subject", "build s", "soak s", "result", "best afterwards"]


def step_cells(number: int, row: StepRow) -> list[str]:
    result = row.kind + (f" ({row.reason})" if row.reason else "")
    tested = row.kind in (ObservationKind.HANG, ObservationKind.CLEAN)
    soak = f"{row.seconds:.1f}/{row.soak_planned_s:.0f}" if tested else "-"
    return [
        str(number),
        row.role,
        row.sha[:12],
        row.subject[:44],
        f"{row.build_seconds:.1f}" if row.build_seconds else "cached",
        soak,
        result,
        f"{row.best_sha[:12]} p={row.best_probability:.3f}",
    ]


_LIVE_WIDTHS = (3, 11, 12, 30, 7, 9, 34, 21)


def live_line(cells: list[str]) -> str:
    """One step as it happens, in fixed-width columns (the final table re-aligns them all)."""
    return "  ".join(
        cell[:width].ljust(width) for cell, width in zip(cells, _LIVE_WIDTHS, strict=True)
    ).rstrip()


def steps_table(state: BisectState) -> str:
    return table([step_cells(i, row) for i, row in enumerate(state.steps, 1)], STEP_HEADERS)


def final_line(git: GitSource, conclusion: Conclusion, find_fix: bool) -> str:
    verb = "fixed by" if find_fix else "introduced by"
    confidence = f"posterior {conclusion.probability:.3f}"
    if conclusion.answer is None:
        shas = ", ".join(s[:12] for s in conclusion.group)
        return f"{verb} one of {shas} ({confidence}; the commits between them were skipped)"
    info = git.commit_info(conclusion.answer)
    link = git.web_url(conclusion.answer)
    text = f"{verb} {info.sha[:12]} {info.subject} ({info.author_date[:10]}; {confidence})"
    if not conclusion.result.confident:
        text += " - NOT confident: the step budget ran out"
    return text + (f"\n{link}" if link else "")


def report_document(
    git: GitSource, state: BisectState, conclusion: Conclusion, seconds: float
) -> dict[str, Any]:
    result = conclusion.result
    answer = git.commit_info(conclusion.answer) if conclusion.answer else None
    return {
        "params": state.params,
        "find_fix": state.find_fix,
        "range": {"good": state.shas[0], "bad": state.shas[-1], "commits": len(state.shas)},
        "reference_bug_key": state.reference_bug_key,
        "answer": None
        if answer is None
        else {
            "sha": answer.sha,
            "subject": answer.subject,
            "author_date": answer.author_date,
            "url": git.web_url(answer.sha),
        },
        "candidates": conclusion.group,
        "posterior": conclusion.probability,
        "confident": result.confident,
        "note": conclusion.note,
        "steps": [row.to_json() for row in state.steps],
        "other_bugs": [bug.to_json() for bug in conclusion.other_bugs],
        "notes": state.notes,
        "soaks": result.soaks,
        "soak_seconds": round(result.soak_seconds, 3),
        "builds": sum(1 for row in state.steps if row.build_seconds > 0),
        "wall_seconds": round(seconds, 3),
        "rate_mean_time_to_hang_s": result.rate.mean_time_to_hang,
    }


def write_report(path: Path, document: dict[str, Any]) -> None:
    write_json(path, document)
