"""The verify use case: build, check the scenario applies, soak in trials, decide, report.

Used by ``verifier verify`` and, one commit at a time, by the bisector.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from verifier.build.builder import Builder, BuildRequest, BuildResult
from verifier.build.symbols import missing_symbols
from verifier.build.toolchain import host_cores
from verifier.errors import BadInput, ExitStatus, NotApplicable
from verifier.run.amplifier import AmplifierPlan, plan_amplifier
from verifier.run.server import server_options_for
from verifier.run.trial import Progress, TrialSettings, run_trial
from verifier.scenario import Scenario
from verifier.verdict.stats import rate_lower_bound, soak_for_fix
from verifier.verdict.verdict import (
    NOT_APPLICABLE,
    TrialResult,
    Verdict,
    decide,
    exposure_s,
    is_other_bug,
)


@dataclass(frozen=True)
class VerifyOptions:
    scenario: Scenario
    amplify: str | None = None  # None: the scenario's default
    delay_us: int | None = None
    amplify_every: int = 1  # stretch only every Nth window (a rarer race)
    trials: int = 3
    soak_s: float = 20.0
    threads: int | None = None  # None: host cores
    concurrency: int | None = None
    flood_processes: int = 0
    confidence: float = 0.95
    probe_client: str | None = None
    baseline: bool = False
    baseline_trials: int = 3


@dataclass
class VerifyOutcome:
    build: BuildResult
    scenario: Scenario
    amplifier: AmplifierPlan | None
    trials: list[TrialResult]
    verdict: Verdict
    run_dir: Path
    started: float
    seconds: float
    baseline: dict[str, Any] = field(default_factory=dict)
    not_applicable: list[str] = field(default_factory=list)


def amplifier_for(options: VerifyOptions, binary: Path, tools_dir: Path) -> AmplifierPlan:
    return plan_amplifier(
        options.amplify,
        options.scenario,
        binary,
        tools_dir,
        options.delay_us,
        options.amplify_every,
    )


def check_applicable(binary: Path, scenario: Scenario) -> list[str]:
    """The scenario's required symbols that ``binary`` lacks (empty: it applies)."""
    return missing_symbols(binary, scenario.requires_symbols)


def trial_settings(options: VerifyOptions, build: BuildResult, soak_s: float) -> TrialSettings:
    recipe_args = server_options_for(
        build.binary, [(o.args, o.when_help_mentions) for o in build.recipe.server_options]
    )
    return TrialSettings(
        soak_s=soak_s,
        threads=options.threads or host_cores(),
        server_args=tuple(recipe_args),
        concurrency=options.concurrency,
        # half the cores flood, half serve: one uvloop process did 8.3k cycles/s here on 2
        # cores, two did 6.5k (benchmarks/stress_throughput.py)
        flood_processes=options.flood_processes or max(1, host_cores() // 2),
        probe_client=options.probe_client,
    )


def run_trials(
    build: BuildResult,
    options: VerifyOptions,
    amplifier: AmplifierPlan,
    run_dir: Path,
    count: int,
    soak_s: float,
    *,
    stop_at_first_hang: bool = True,
    label: str = "trial",
    progress: Progress | None = None,
    total_soak_s: float | None = None,
) -> list[TrialResult]:
    """Up to ``count`` trials of ``soak_s`` (or until ``total_soak_s`` is spent)."""
    trials: list[TrialResult] = []
    spent = 0.0
    for index in range(1, count + 1):
        this_soak = soak_s if total_soak_s is None else min(soak_s, total_soak_s - spent)
        if this_soak <= 0:
            break
        settings = trial_settings(options, build, this_soak)
        trial = run_trial(
            index,
            build.binary,
            options.scenario,
            amplifier,
            settings,
            run_dir / f"{label}-{index}",
            progress,
        )
        trials.append(trial)
        spent += trial.soak_s
        this_bug = trial.outcome == "crash" or (
            trial.outcome == "hang" and not is_other_bug(trial, options.scenario.expect)
        )
        if trial.outcome == "error" or (stop_at_first_hang and this_bug):
            break  # another bug's hang says nothing about this one: the next trial goes on
    return trials


def measure_baseline(
    builder: Builder,
    request: BuildRequest,
    options: VerifyOptions,
    tools_dir: Path,
    run_dir: Path,
    progress: Progress | None,
) -> dict[str, Any]:
    """Time-to-hang of the build without the patch under test (the last --patch; earlier
    ones, such as fixtures, stay): the rate the patched soak must beat."""
    if not request.patches:
        raise BadInput("--baseline needs a --patch to test (the baseline is the build without it)")
    unpatched = builder.build(replace(request, patches=request.patches[:-1]))
    amplifier = amplifier_for(options, unpatched.binary, tools_dir)
    trials = run_trials(
        unpatched,
        options,
        amplifier,
        run_dir / "baseline",
        options.baseline_trials,
        options.soak_s,
        stop_at_first_hang=False,
        label="baseline",
        progress=progress,
    )
    expected = options.scenario.expect
    hangs = [t for t in trials if t.outcome == "hang" and not is_other_bug(t, expected)]
    exposure = sum(exposure_s(t) for t in trials)
    required = soak_for_fix(len(hangs), exposure, options.confidence)
    return {
        "commit": unpatched.commit,
        "trials": len(trials),
        "hangs": len(hangs),
        "times_to_hang_s": [t.time_to_hang_s for t in hangs],
        "exposure_s": round(exposure, 3),
        "rate_lower_bound_per_s": rate_lower_bound(exposure, len(hangs), options.confidence),
        "required_soak_s": required,
    }


def verify(
    builder: Builder,
    request: BuildRequest,
    options: VerifyOptions,
    tools_dir: Path,
    run_dir: Path,
    progress: Progress | None = None,
) -> VerifyOutcome:
    started = time.time()
    build = builder.build(request)
    missing = check_applicable(build.binary, options.scenario)
    if missing:
        verdict = Verdict(
            NOT_APPLICABLE,
            f"NOT APPLICABLE: scenario {options.scenario.name} needs "
            f"{', '.join(missing)}, which this build does not define",
            ExitStatus.NOT_APPLICABLE,
        )
        return VerifyOutcome(
            build,
            options.scenario,
            None,
            [],
            verdict,
            run_dir,
            started,
            time.time() - started,
            not_applicable=missing,
        )
    try:
        amplifier = amplifier_for(options, build.binary, tools_dir)
    except NotApplicable as error:
        verdict = Verdict(
            NOT_APPLICABLE, f"NOT APPLICABLE: {error.message}", ExitStatus.NOT_APPLICABLE
        )
        return VerifyOutcome(
            build, options.scenario, None, [], verdict, run_dir, started, time.time() - started
        )
    baseline: dict[str, Any] = {}
    count, total = options.trials, None
    if options.baseline:
        baseline = measure_baseline(builder, request, options, tools_dir, run_dir, progress)
        required = baseline["required_soak_s"]
        if not math.isfinite(required):
            verdict = Verdict(
                "INCONCLUSIVE",
                f"INCONCLUSIVE: the unpatched build did not hang in {baseline['exposure_s']:.0f} s "
                "(baseline), so no soak length can show the patch fixes it",
                ExitStatus.INCONCLUSIVE,
            )
            return VerifyOutcome(
                build,
                options.scenario,
                amplifier,
                [],
                verdict,
                run_dir,
                started,
                time.time() - started,
                baseline=baseline,
            )
        total = required
        count = max(1, math.ceil(required / options.soak_s))
    trials = run_trials(
        build,
        options,
        amplifier,
        run_dir,
        count,
        options.soak_s,
        progress=progress,
        total_soak_s=total,
    )
    verdict = decide(
        trials,
        expected_class=options.scenario.expect,
        confidence=options.confidence,
        amplified=amplifier.kind != "none",
    )
    return VerifyOutcome(
        build,
        options.scenario,
        amplifier,
        trials,
        verdict,
        run_dir,
        started,
        time.time() - started,
        baseline=baseline,
    )
