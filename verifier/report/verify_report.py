"""The verify report: a summary table for people and a JSON document for machines."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from verifier.report.table import key_value_table
from verifier.util.atomic import write_json
from verifier.verdict.verdict import TrialResult, is_other_bug
from verifier.verify import VerifyOutcome


def _thread_excerpt(evidence_dir: Path, lwp: int | None, max_frames: int = 12) -> str:
    """The backtrace of one thread (by LWP) from the saved gdb dump."""
    path = evidence_dir / "backtraces.txt"
    if lwp is None or not path.is_file():
        return ""
    lines = path.read_text(errors="replace").splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if f"(LWP {lwp})" in line and line.startswith("Thread ")
        ),
        None,
    )
    if start is None:
        return ""
    frames = [line for line in lines[start + 1 :] if line.startswith("#")]
    stop = next(
        (i for i, line in enumerate(lines[start + 1 :]) if not line.startswith("#")), len(frames)
    )
    shown = lines[start : start + 1 + min(stop, max_frames)]
    return "\n".join("    " + re.sub(r"0x[0-9a-f]{12,16} in ", "", line) for line in shown)


def hang_backtrace(outcome: VerifyOutcome) -> str:
    """The hung thread of this bug's hang (else of another bug's)."""
    expected = outcome.scenario.expect
    for trial in sorted(outcome.trials, key=lambda t: is_other_bug(t, expected)):
        if trial.outcome == "hang" and trial.signature:
            details = trial.signature.get("details", {})
            lwp = details.get("lwp")
            if lwp is None:  # lost wake-up and unknown: show the listener (main thread)
                threads = Path(trial.run_dir) / "evidence" / "threads.json"
                if threads.is_file():
                    states = json.loads(threads.read_text())
                    lwp = states[0]["tid"] if states else None
            return _thread_excerpt(Path(trial.run_dir) / "evidence", lwp)
    return ""


def _last_good(trial: TrialResult) -> str:
    if trial.last_good_s is None:
        return "no good reply on a new connection since the flood began"
    return f"last good reply at {trial.last_good_s:.1f} s"


def summary_rows(outcome: VerifyOutcome) -> list[tuple[str, str]]:
    build = outcome.build
    patches = ", ".join(p.name for p in build.patches) or "none"
    if build.patches and build.entry.meta.get("reverse"):
        patches += " (reversed)"
    expected = outcome.scenario.expect
    stopped = [t for t in outcome.trials if t.outcome in ("hang", "crash")]
    hang_trial = next((t for t in stopped if not is_other_bug(t, expected)), None)
    hang_trial = hang_trial or next(iter(stopped), None)
    rows: list[tuple[str, str]] = [
        ("source", build.entry.meta.get("source", "?")),
        ("ref", f"{build.describe} ({build.commit[:12]})"),
        ("patches", patches),
        (
            "build",
            f"{'cache hit' if build.cache_hit else 'built'} "
            f"({build.build_seconds:.1f} s build, {build.seconds:.1f} s now)",
        ),
        ("scenario", f"{outcome.scenario.name}: {outcome.scenario.summary}"),
        ("amplifier", outcome.amplifier.describe() if outcome.amplifier else "-"),
        (
            "trials",
            f"{len(outcome.trials)}, {sum(t.soak_s for t in outcome.trials):.1f} s of flood",
        ),
    ]
    if outcome.baseline:
        b = outcome.baseline
        rows.append(
            (
                "baseline",
                f"{b['hangs']} hangs in {b['exposure_s']:.1f} s unpatched; "
                f"needed soak {b['required_soak_s']:.1f} s",
            )
        )
    if outcome.trials:
        cycles = sum(t.flood.get("cycles", 0) for t in outcome.trials)
        rows.append(
            (
                "flood",
                f"{cycles:,} connection cycles, "
                f"{sum(t.emfile_episodes for t in outcome.trials):,} EMFILE episodes, "
                f"{sum(t.amplifier_triggers for t in outcome.trials):,} amplifier "
                f"triggers, {sum(t.saturation_episodes for t in outcome.trials)} "
                "saturation episodes",
            )
        )
    rows.append(("verdict", outcome.verdict.headline))
    if hang_trial is not None and hang_trial.outcome == "hang":
        rows.append(
            (
                "time to hang",
                f"first failed probe {hang_trial.time_to_hang_s:.1f} s into the flood; HANG "
                f"confirmed at {hang_trial.verdict_at_s:.1f} s ({_last_good(hang_trial)})",
            )
        )
        if hang_trial.signature:
            rows.append(("signature", hang_trial.signature["summary"]))
        rows.append(("evidence", str(Path(hang_trial.run_dir) / "evidence")))
    for bug in outcome.verdict.other_bugs:
        if hang_trial is None or bug["trial"] != hang_trial.index:
            rows.append(("other bug", f"{bug['class']} in trial {bug['trial']}: {bug['evidence']}"))
    if hang_trial is not None and hang_trial.outcome == "crash" and hang_trial.crash_backtrace:
        rows.append(("backtrace", hang_trial.crash_backtrace.replace("\n", " <- ")[:300]))
    rows.append(("report", str(outcome.run_dir / "report.json")))
    return rows


def report_document(outcome: VerifyOutcome, argv: list[str]) -> dict[str, Any]:
    build = outcome.build
    return {
        "command": argv,
        "started": dt.datetime.fromtimestamp(outcome.started, dt.UTC).isoformat(),
        "seconds": round(outcome.seconds, 3),
        "source": build.entry.meta.get("source"),
        "commit": build.commit,
        "describe": build.describe,
        "patches": build.entry.meta.get("patches", []),
        "reverse": build.entry.meta.get("reverse", False),
        "patch_notes": build.patch_notes,
        "build": {
            "key": build.entry.key,
            "binary": str(build.binary),
            "cache_hit": build.cache_hit,
            "build_seconds": build.build_seconds,
            "log": str(build.entry.log),
            "recipe": build.recipe.path.name,
        },
        "scenario": outcome.scenario.name,
        "amplifier": outcome.amplifier.describe() if outcome.amplifier else None,
        "baseline": outcome.baseline or None,
        "not_applicable_missing_symbols": outcome.not_applicable,
        "trials": [t.as_dict() for t in outcome.trials],
        "verdict": outcome.verdict.as_dict(),
    }


def write_report(outcome: VerifyOutcome, argv: list[str]) -> Path:
    path = outcome.run_dir / "report.json"
    write_json(path, report_document(outcome, argv))
    return path


def render(outcome: VerifyOutcome) -> str:
    text = key_value_table(summary_rows(outcome))
    trace = hang_backtrace(outcome)
    return f"{text}\n\nhung thread:\n{trace}" if trace else text
