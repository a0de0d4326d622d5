"""The matrix as JUnit XML, as GitLab and Jenkins read it.

One ``testcase`` per cell: ``classname`` = ``source@ref.patchset`` (GitLab groups by it),
``name`` = the scenario, ``time`` = the seconds the cell took when it ran (a cached cell
keeps its original time and says "cached" in its output). A cell that misses its
expectation has a ``failure`` (message: the verdict headline; type: the verdict kind and
hang class, e.g. ``HANG:listener-lost-wakeup``, or the reason there is no verdict, e.g.
``build-failed``; text: the hang's diagnosis or the bound). A harness error is an
``error``; NOT APPLICABLE expected to pass is ``skipped`` (see verifier.matrix.gate).
``system-out`` has the summary and where the evidence is (host:path), cut at 16,000
characters: 100 cells stay under 2 MB, far below GitLab's 30 MB per file.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

from verifier.errors import ExitStatus
from verifier.matrix.gate import CellState, GateReport, JudgedCell
from verifier.report.matrix_grid import deciding_trial, verdict_text

MAX_OUTPUT_CHARS = 16_000
# XML 1.0 forbids most control characters (a terminal escape in a log would break the file)
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean(text: str) -> str:
    return _INVALID_XML.sub("?", text)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return text[:limit] + f"\n... ({cut} more characters; see the JSON report)"


def failure_type(cell: JudgedCell) -> str:
    result = cell.result
    if result.failure is not None:
        try:
            return ExitStatus(result.failure.status).name.lower().replace("_", "-")
        except ValueError:
            return f"exit-{result.failure.status}"
    verdict = result.verdict
    assert verdict is not None
    return str(verdict.kind) + (f":{verdict.hang_class}" if verdict.hang_class else "")


def _message(cell: JudgedCell) -> str:
    result = cell.result
    if result.failure is not None:
        return result.failure.message
    assert result.verdict is not None
    return result.verdict.headline


def _failure_text(cell: JudgedCell) -> str:
    result = cell.result
    lines = [f"expected {cell.expectation}, got {verdict_text(result)}"]
    trial = deciding_trial(result)
    if trial is not None and trial.diagnosis is not None:
        lines.append(f"diagnosis: {trial.diagnosis.summary}")
    elif result.verdict is not None and result.verdict.bound:
        lines.append(f"bound: {result.verdict.bound}")
    lines.append(f"evidence: {result.evidence}")
    return "\n".join(lines)


def system_out(cell: JudgedCell, report: GateReport) -> str:
    result = cell.result
    lines = [
        _message(cell),
        f"expectation: {cell.expectation} ({cell.state})",
        f"commit: {result.describe or '?'} ({result.commit[:12]})",
        f"ran on {result.host} in {result.seconds:.1f} s"
        + (" (cached result)" if result.cached else ""),
        f"evidence: {result.evidence}",
    ]
    lines += [
        f"compared: {c.sentence}"
        for c in report.comparisons_for(result.row, result.scenario)
        if c.candidate == result.patch_set
    ]
    for trial in result.trials:
        when = f" after {trial.time_to_hang_s:.1f} s" if trial.time_to_hang_s else ""
        what = f" ({trial.hang_class}" + (f", proven by {trial.proof})" if trial.proof else ")")
        lines.append(
            f"trial {trial.index}: {trial.outcome}{when}"
            + (what if trial.hang_class else "")
            + f"; {trial.soak_s:.1f} s of flood, "
            f"{trial.flood.cycles if trial.flood else 0:,} connection cycles, "
            f"{trial.emfile_episodes:,} EMFILE episodes, {trial.amplifier_triggers:,} "
            f"amplifier triggers; {trial.run_dir}"
            + (f"; error: {trial.error}" if trial.error else "")
        )
    return truncate("\n".join(lines), MAX_OUTPUT_CHARS)


def junit_xml(report: GateReport) -> str:
    failures = report.count(CellState.MISSED)
    errors = report.count(CellState.ERROR)
    skipped = report.count(CellState.SKIPPED)
    total_time = sum(c.result.seconds for c in report.cells)
    counts = {
        "tests": str(len(report.cells)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": f"{total_time:.3f}",
    }
    root = ET.Element("testsuites", {"name": clean(report.name), **counts})
    started = min((c.result.started for c in report.cells), default=0.0)
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": clean(report.name),
            **counts,
            "timestamp": dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("matrix", report.matrix),
        ("executor", report.executor),
        ("reference", report.reference),
        ("summary", report.summary_line()),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": clean(value)})
    for cell in report.cells:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": clean(cell.classname),
                "name": clean(cell.result.scenario),
                "time": f"{cell.result.seconds:.3f}",
            },
        )
        if cell.state == CellState.MISSED:
            tag = "failure"
        elif cell.state == CellState.ERROR:
            tag = "error"
        elif cell.state == CellState.SKIPPED:
            tag = "skipped"
        else:
            tag = ""
        if tag:
            element = ET.SubElement(
                case, tag, {"message": clean(_message(cell)), "type": clean(failure_type(cell))}
            )
            if tag != "skipped":
                element.text = clean(_failure_text(cell))
        ET.SubElement(case, "system-out").text = clean(system_out(cell, report))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
