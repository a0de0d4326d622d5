"""The verify report: a summary table for people and a JSON document for machines."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from verifier.evidence.sanitizer import SanitizerFinding
from verifier.records.timeline import EventKind
from verifier.records.trial import TrialResult
from verifier.report.table import key_value_table, table
from verifier.util.atomic import write_json
from verifier.verdict.verdict import is_other_bug, is_this_bug
from verifier.verify import VerifyOutcome
from verifier.vocabulary import TrialOutcome


def hang_backtrace(outcome: VerifyOutcome) -> str:
    """The hung thread of this bug's hang (else of another bug's), from its diagnosis."""
    hunted, aside = outcome.prepared.options.hunted, outcome.prepared.options.set_aside
    for trial in sorted(outcome.trials, key=lambda t: is_other_bug(t, hunted, aside)):
        if trial.outcome == TrialOutcome.HANG and trial.diagnosis is not None:
            return trial.diagnosis.hung_stack
    return ""


def _seen_by(trial: TrialResult) -> str:
    """What noticed the hang first: a failed probe, or the wait-for graph between probes."""
    seen = [e for e in trial.timeline.events if e.kind == EventKind.HANG_SUSPECTED]
    return seen[0].detail if seen and seen[0].detail else "failed probe"


def _last_good(trial: TrialResult) -> str:
    if trial.last_good_s is None:
        return "no good reply on a new connection since the flood began"
    return f"last good reply at {trial.last_good_s:.1f} s"


Rows = list[tuple[str, str]]


def summary_rows(outcome: VerifyOutcome) -> Rows:
    hunted, aside = outcome.prepared.options.hunted, outcome.prepared.options.set_aside
    ends = (TrialOutcome.HANG, TrialOutcome.CRASH, TrialOutcome.WRONG)
    stopped = [t for t in outcome.trials if t.outcome in ends]
    hang_trial = next((t for t in stopped if is_this_bug(t, hunted, aside)), None)
    hang_trial = hang_trial or next(iter(stopped), None)
    rows = _what_rows(outcome) + _soak_rows(outcome)
    rows.append(("verdict", outcome.verdict.headline))
    if hang_trial is not None:
        rows += _stop_rows(hang_trial)
    if outcome.verdict.sanitizer is not None:
        rows += sanitizer_rows(outcome.verdict.sanitizer)
    for bug in outcome.verdict.other_bugs:
        if hang_trial is None or bug.trial != hang_trial.index:
            rows.append(("other bug", f"{bug.describe()}: {bug.evidence}/evidence"))
    rows.append(("report", str(outcome.run_dir / "report.json")))
    return rows


def _what_rows(outcome: VerifyOutcome) -> Rows:
    """What was verified: the build (source, ref, patches), or the binary as shipped."""
    build, target = outcome.build, outcome.prepared.target
    if build is not None:
        patches = ", ".join(p.name for p in build.patches) or "none"
        if build.patches and build.reverse:
            patches += " (reversed)"
        how = "cache hit" if build.cache_hit else "built"
        return [
            ("source", build.source_label),
            ("ref", f"{build.describe} ({build.commit[:12]})"),
            ("patches", patches),
            ("build", f"{how} ({build.build_seconds:.1f} s build, {build.seconds:.1f} s now)"),
        ]
    if target is not None:
        rows = [("binary", target.label)]
        if target.symbols != target.binary:
            rows.append(("symbols", str(target.symbols)))
        return rows + [("degraded", text) for text in target.degraded]
    return [("ref", outcome.prepared.commit[:12])]


def _soak_rows(outcome: VerifyOutcome) -> Rows:
    trials = outcome.trials
    rows = [
        ("scenario", f"{outcome.scenario.name}: {outcome.scenario.summary}"),
        ("amplifier", outcome.amplifier.describe() if outcome.amplifier else "-"),
        (
            "trials",
            f"{len(trials)}, {sum(t.soak_s for t in trials):.1f} s of flood at full strength",
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
    if outcome.comparison is not None:
        rows.append(("compared", outcome.comparison.sentence))
    scenario = outcome.scenario
    if scenario.workload_name:
        rows.append(("workload", scenario.workload_name))
    left_out = sorted({item for t in trials if t.clients for item in t.clients.left_out})
    if left_out:
        rows.append(("left out", "; ".join(left_out)))
    events = [f"trial {t.index}: {e}" for t in trials for e in t.events]
    if events:
        rows.append(("events", "; ".join(events[:12]) + (" ..." if len(events) > 12 else "")))
    checked = [t.check for t in trials if t.check is not None]
    if checked and not any(c.violations for c in checked):
        rows.append(("checker", "; ".join(c.describe()[0].removeprefix("checker: ")
                                          for c in checked)))  # fmt: skip
    notes = [f"trial {t.index}: {n}" for t in trials for n in t.notes]
    if notes:
        rows.append(("notes", "; ".join(notes[:6])))
    if trials and scenario.flood.concurrency:
        rows.append(
            (
                "flood",
                f"{sum(t.flood.cycles for t in trials if t.flood):,} connection cycles, "
                f"{sum(t.emfile_episodes for t in trials):,} EMFILE episodes, "
                f"{sum(t.amplifier_triggers for t in trials):,} amplifier triggers, "
                f"{sum(t.saturation_episodes for t in trials)} saturation episodes",
            )
        )
    return rows


def sanitizer_rows(finding: SanitizerFinding, frames: int = 5) -> Rows:
    """The report's two accesses (top frames) and where the whole report is."""
    rows = [
        (f"stack {i}", f"{stack.title} " + " <- ".join(f.render() for f in stack.frames[:frames]))
        for i, stack in enumerate(finding.accesses, start=1)
    ]
    return [*rows, ("sanitizer", finding.report)]


def _stop_rows(trial: TrialResult) -> Rows:
    """The trial that stopped the run: when and how the hang was proven, or the crash."""
    if trial.fatal_finding is not None:
        return []  # the report's stacks are the evidence (sanitizer_rows)
    if trial.outcome == TrialOutcome.CRASH:
        text = trial.crash_backtrace.replace("\n", " <- ")[:300]
        return [("backtrace", text)] if text else []
    if trial.outcome == TrialOutcome.WRONG and trial.check is not None:
        return [("checker", "\n".join(trial.check.describe())), ("evidence", trial.run_dir)]
    rows = [
        (
            "time to hang",
            f"first seen {trial.time_to_hang_s or 0:.1f} s into the flood ({_seen_by(trial)}); "
            f"HANG proven at {trial.verdict_at_s or 0:.1f} s by {trial.proof} "
            f"({_last_good(trial)})",
        )
    ]
    if trial.diagnosis:
        rows.append(("diagnosis", trial.diagnosis.summary))
    if trial.stretched.get("named"):
        rows.append(("stretched", str(trial.stretched["named"])))
    return [*rows, ("evidence", str(Path(trial.run_dir) / "evidence"))]


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
        "comparison": outcome.comparison.to_json() if outcome.comparison else None,
        "not_applicable_missing_symbols": prepared.missing,
        "trials": [t.to_json() for t in outcome.trials],
        "verdict": outcome.verdict.to_json(),
    }


def write_report(outcome: VerifyOutcome, argv: list[str]) -> Path:
    path = outcome.run_dir / "report.json"
    write_json(path, report_document(outcome, argv))
    return path


def clients_table(trials: list[TrialResult]) -> str:
    """What the clients saw, per group and command, over every trial (latency: the worst
    trial's percentile)."""
    merged: dict[tuple[str, str, str], list[Any]] = {}
    for trial in trials:
        for seen in trial.clients.commands if trial.clients else ():
            row = merged.setdefault((seen.group, seen.command, seen.protocol), [0, 0, {}, 0, 0, 0])
            row[0] += seen.sent
            row[1] += seen.ok
            for kind, n in seen.errors.items():
                row[2][kind] = row[2].get(kind, 0) + n
            row[3] = max(row[3], seen.p50_us)
            row[4] = max(row[4], seen.p99_us)
            row[5] = max(row[5], seen.max_us)
    rows = [
        (
            group,
            command,
            protocol,
            f"{sent:,}",
            f"{ok:,}",
            ", ".join(f"{n:,} {k}" for k, n in sorted(errors.items())) or "-",
            f"{p50 / 1000:.2f}",
            f"{p99 / 1000:.2f}",
            f"{top / 1000:.1f}",
        )
        for (group, command, protocol), (sent, ok, errors, p50, p99, top) in merged.items()
    ]
    headers = ["group", "command", "protocol", "sent", "answered ok", "errors", "p50 ms",
               "p99 ms", "max ms"]  # fmt: skip
    return table(rows, headers) if rows else ""


def render(outcome: VerifyOutcome) -> str:
    text = key_value_table(summary_rows(outcome))
    clients = clients_table(outcome.trials)
    if clients:
        text += "\n\nwhat the clients saw:\n" + clients
    trace = hang_backtrace(outcome)
    return f"{text}\n\nhung thread:\n{trace}" if trace else text
