"""The verify report: a summary table for people and a JSON document for machines."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from verifier.report.table import key_value_table
from verifier.run.result import TrialResult
from verifier.util.atomic import write_json
from verifier.verdict.verdict import is_other_bug, is_this_bug
from verifier.verify import VerifyOutcome
from verifier.vocabulary import TrialOutcome


def hang_backtrace(outcome: VerifyOutcome) -> str:
    """The hung thread of this bug's hang (else of another bug's), from its diagnosis."""
    hunted = outcome.prepared.options.hunted
    for trial in sorted(outcome.trials, key=lambda t: is_other_bug(t, hunted)):
        if trial.outcome == TrialOutcome.HANG and trial.diagnosis is not None:
            return trial.diagnosis.hung_stack
    return ""


def _last_good(trial: TrialResult) -> str:
    if trial.last_good_s is None:
        return "no good reply on a new connection since the flood began"
    return f"last good reply at {trial.last_good_s:.1f} s"


def summary_rows(outcome: VerifyOutcome) -> list[tuple[str, str]]:
    build, options = outcome.build, outcome.prepared.options
    hunted = options.hunted
    stopped = [t for t in outcome.trials if t.outcome in (TrialOutcome.HANG, TrialOutcome.CRASH)]
    hang_trial = next((t for t in stopped if is_this_bug(t, hunted)), None)
    hang_trial = hang_trial or next(iter(stopped), None)
    rows: list[tuple[str, str]] = []
    if build is not None:
        patches = ", ".join(p.name for p in build.patches) or "none"
        if build.patches and build.reverse:
            patches += " (reversed)"
        rows += [
            ("source", build.source_label),
            ("ref", f"{build.describe} ({build.commit[:12]})"),
            ("patches", patches),
            (
                "build",
                f"{'cache hit' if build.cache_hit else 'built'} "
                f"({build.build_seconds:.1f} s build, {build.seconds:.1f} s now)",
            ),
        ]
    elif outcome.prepared.target is not None:
        target = outcome.prepared.target
        rows.append(("binary", target.label))
        if target.symbols != target.binary:
            rows.append(("symbols", str(target.symbols)))
        rows += [("degraded", text) for text in target.degraded]
    else:
        rows.append(("ref", outcome.prepared.commit[:12]))
    rows += [
        ("scenario", f"{outcome.scenario.name}: {outcome.scenario.summary}"),
        ("amplifier", outcome.amplifier.describe() if outcome.amplifier else "-"),
        (
            "trials",
            f"{len(outcome.trials)}, {sum(t.soak_s for t in outcome.trials):.1f} s of flood "
            "at full strength",
        ),
    ]
    if outcome.baseline is not None:
        b = outcome.baseline
        rows.append(
            (
                "baseline",
                f"{b.hangs} hangs in {b.exposure_s:.1f} s unpatched; "
                f"needed soak {b.required_soak_s:.1f} s",
            )
        )
    if outcome.trials:
        cycles = sum(t.flood.cycles for t in outcome.trials if t.flood)
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
    if hang_trial is not None and hang_trial.outcome == TrialOutcome.HANG:
        rows.append(
            (
                "time to hang",
                f"first failed probe {hang_trial.time_to_hang_s or 0:.1f} s into the flood; "
                f"HANG proven at {hang_trial.verdict_at_s or 0:.1f} s by "
                f"{hang_trial.proof} ({_last_good(hang_trial)})",
            )
        )
        if hang_trial.diagnosis:
            rows.append(("diagnosis", hang_trial.diagnosis.summary))
        if hang_trial.stretched.get("named"):
            rows.append(("stretched", str(hang_trial.stretched["named"])))
        rows.append(("evidence", str(Path(hang_trial.run_dir) / "evidence")))
    for bug in outcome.verdict.other_bugs:
        if hang_trial is None or bug.trial != hang_trial.index:
            rows.append(("other bug", f"{bug.describe()}: {bug.evidence}/evidence"))
    if (
        hang_trial is not None
        and hang_trial.outcome == TrialOutcome.CRASH
        and hang_trial.crash_backtrace
    ):
        rows.append(("backtrace", hang_trial.crash_backtrace.replace("\n", " <- ")[:300]))
    rows.append(("report", str(outcome.run_dir / "report.json")))
    return rows


def report_document(outcome: VerifyOutcome, argv: list[str]) -> dict[str, Any]:
    build = outcome.build
    prepared = outcome.prepared
    return {
        "command": argv,
        "started": dt.datetime.fromtimestamp(outcome.started, dt.UTC).isoformat(),
        "seconds": round(outcome.seconds, 3),
        "source": build.source_label if build else None,
        "commit": prepared.commit,
        "describe": build.describe if build else None,
        "patches": [p.to_json() for p in build.meta.patches] if build else [],
        "reverse": build.reverse if build else False,
        "patch_notes": build.patch_notes if build else [],
        "build": None
        if build is None
        else {
            "key": build.key,
            "binary": str(build.binary),
            "cache_hit": build.cache_hit,
            "build_seconds": build.build_seconds,
            "log": str(build.log),
            "recipe": build.recipe.path.name,
        },
        "binary": None
        if prepared.target is None
        else {
            "path": str(prepared.target.binary),
            "symbols": str(prepared.target.symbols),
            "label": prepared.target.label,
            "degraded": list(prepared.target.degraded),
        },
        "scenario": outcome.scenario.name,
        "hunted": None if prepared.options.hunted is None else str(prepared.options.hunted),
        "amplifier": outcome.amplifier.describe() if outcome.amplifier else None,
        "baseline": outcome.baseline.to_json() if outcome.baseline else None,
        "not_applicable_missing_symbols": prepared.missing,
        "trials": [t.to_json() for t in outcome.trials],
        "verdict": outcome.verdict.to_json(),
    }


def write_report(outcome: VerifyOutcome, argv: list[str]) -> Path:
    path = outcome.run_dir / "report.json"
    write_json(path, report_document(outcome, argv))
    return path


def render(outcome: VerifyOutcome) -> str:
    text = key_value_table(summary_rows(outcome))
    trace = hang_backtrace(outcome)
    return f"{text}\n\nhung thread:\n{trace}" if trace else text
