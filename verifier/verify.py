"""The verify core: the one way every consumer (verify, bisect, matrix, demo) runs a soak.

    core = VerifyCore(builder, tools_dir, progress)
    with core.prepare(request, options) as prepared:  # source check, build (pinned),
        if prepared.applicable:                      # symbols, amplifier plan
            trials = core.soak(prepared, run_dir, SoakPlan(count=1, soak_s=20))
    outcome = core.verify(request, options, run_dir)  # the whole use case, with a verdict

A consumer never starts a trial itself: it states what it wants (a ``SoakPlan``) and
reads typed results (``TrialResult``, ``Verdict``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from verifier.amplify.auto import AutoMemory
from verifier.build.applicability import source_lacks_symbols
from verifier.build.builder import Builder, BuildRequest, BuildResult
from verifier.build.sanitizer import runtime_env
from verifier.build.symbols import missing_symbols
from verifier.build.toolchain import host_cores
from verifier.errors import BadInput, NotApplicable
from verifier.paths import CacheLayout
from verifier.records.trial import TrialResult
from verifier.run.amplifier import AmplifierPlan, plan_amplifier
from verifier.run.auto_plan import AutoPlan, auto_plan
from verifier.run.server import server_options_for
from verifier.run.target import Target
from verifier.run.trial import Progress, TrialSettings, flood_config, run_trial, server_config
from verifier.run.workload_fit import fit_workload
from verifier.scenario import Scenario
from verifier.stress.features import detect
from verifier.util.atomic import write_json
from verifier.verdict.compare import Comparison, SoakSummary, compare, summarize
from verifier.verdict.stats import rate_lower_bound, soak_for_fix
from verifier.verdict.verdict import Verdict, decide, is_this_bug
from verifier.vocabulary import AmplifierKind, HangClass, TrialOutcome, VerdictKind

Amplifier = AmplifierPlan | AutoPlan  # a fixed plan, or one that learns across trials


@dataclass(frozen=True)
class VerifyOptions:
    scenario: Scenario
    amplify: AmplifierKind | None = None  # None: the scenario's default
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
    hunt: HangClass | None = None  # the class hunted; None: the scenario's
    hunt_report: str | None = None  # --expect sanitizer:X: the report hunted (signature/kind)
    auto_memory: Path | None = None  # --amplify auto's memory (default: one in the cache)

    @property
    def hunted(self) -> HangClass | None:
        """The hang class this run is about (None: any hang is the bug)."""
        return self.hunt or self.scenario.hang_class

    @property
    def set_aside(self) -> frozenset[HangClass]:
        """Hang classes of other bugs the scenario's flood meets first (never the proof)."""
        return self.scenario.set_aside


@dataclass
class Prepared:
    """A build (or a shipped binary) made ready for a scenario: either applicable, with its
    amplifier plan, or not, with the reason (the scenario's code is missing from the
    source or the binary)."""

    options: VerifyOptions
    commit: str  # "" for a shipped binary
    build: BuildResult | None = None
    target: Target | None = None
    amplifier: Amplifier | None = None
    missing: list[str] = field(default_factory=list)
    why_not: str = ""
    left_out: list[str] = field(default_factory=list)  # workload parts this build lacks

    @property
    def applicable(self) -> bool:
        return not self.why_not


EXTRA_TRIALS_FOR_TOTAL = 3
AUTO_MEMORY = "memory.json"  # in the cache's auto folder, shared by scenarios and commands
MIN_TRIAL_SOAK_S = 1.0


@dataclass(frozen=True)
class SoakPlan:
    count: int  # trials (each a fresh server)
    soak_s: float  # seconds of flood per trial
    total_soak_s: float | None = None  # stop once this much exposure is spent
    stop_at_first_bug: bool = True  # a hang of another bug never stops the run
    label: str = "trial"  # run folders are <label>-<n>


@dataclass(frozen=True)
class Baseline:
    """Time-to-hang of the build without the patch under test: the rate a fix must beat."""

    commit: str
    trials: int
    hangs: int
    times_to_hang_s: tuple[float, ...]
    exposure_s: float
    rate_lower_bound_per_s: float
    required_soak_s: float

    def summary(self) -> SoakSummary:
        return SoakSummary(
            "unpatched", self.trials, self.hangs, 0, self.times_to_hang_s, self.exposure_s
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "trials": self.trials,
            "hangs": self.hangs,
            "times_to_hang_s": list(self.times_to_hang_s),
            "exposure_s": round(self.exposure_s, 3),
            "rate_lower_bound_per_s": self.rate_lower_bound_per_s,
            "required_soak_s": self.required_soak_s,
        }


@dataclass
class VerifyOutcome:
    prepared: Prepared
    trials: list[TrialResult]
    verdict: Verdict
    run_dir: Path
    started: float
    seconds: float
    baseline: Baseline | None = None
    comparison: Comparison | None = None  # with --baseline: the patch against its absence

    @property
    def scenario(self) -> Scenario:
        return self.prepared.options.scenario

    @property
    def build(self) -> BuildResult | None:
        return self.prepared.build

    @property
    def amplifier(self) -> Amplifier | None:
        return self.prepared.amplifier


def trial_settings(options: VerifyOptions, target: Target, soak_s: float) -> TrialSettings:
    recipe_args = server_options_for(
        target.binary, [(o.args, o.when_help_mentions) for o in target.recipe.server_options]
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
        hunted=options.hunted,
        sanitizer=target.sanitizer,
        symbols=target.symbols,
        debug_dir=target.debug_dir,
    )


def unique_dir(parent: Path, stem: str) -> Path:
    """``parent/stem``, or ``stem-2``, ``stem-3`` ... if taken: a run never overwrites
    another run's evidence (a resumed bisect restarts its step counter)."""
    candidate, n = parent / stem, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{stem}-{n}"
    return candidate


class VerifyCore:
    def __init__(
        self,
        builder: Builder,
        tools_dir: Path,
        progress: Progress | None = None,
        auto_dir: Path | None = None,
        auto_sweep: bool = True,  # False: auto's previous schedule (benchmarks compare)
    ) -> None:
        self.builder = builder
        self.tools_dir = tools_dir
        self.progress = progress
        # what --amplify auto discovered and learned (default: beside tools/ in the cache)
        self.auto_dir = auto_dir or CacheLayout(tools_dir.parent).auto
        self._auto_plans: dict[tuple[str, str, str, str], AutoPlan] = {}
        self._auto_memories: dict[Path, AutoMemory] = {}  # one object per file
        self.auto_sweep = auto_sweep

    @contextlib.contextmanager
    def prepare(self, request: BuildRequest, options: VerifyOptions) -> Iterator[Prepared]:
        """Check the source has the scenario's code (git grep, no build), build (the entry
        stays pinned while the block runs), check the binary's symbols, plan the amplifier.
        A build failure raises ``BuildFailed``; a missing piece is a ``Prepared`` that is
        not applicable."""
        scenario = options.scenario
        commit = request.source.git.resolve(request.ref)
        lacking = source_lacks_symbols(
            request.source.git.repo, commit, scenario.requires_symbols, request.patches
        )
        if lacking:
            yield Prepared(
                options,
                commit,
                missing=lacking,
                why_not=f"scenario {scenario.name} needs {', '.join(lacking)}, "
                "which this commit's source does not define",
            )
            return
        with self.builder.acquire(request) as build:
            yield self._ready(Prepared(options, commit, build, Target.of_build(build)))

    def prepare_binary(self, target: Target, options: VerifyOptions) -> Prepared:
        """A shipped binary (``verify --binary``): no source, no build; the symbols come
        from its debug file when it is stripped."""
        return self._ready(Prepared(options, "", None, target))

    def _ready(self, prepared: Prepared) -> Prepared:
        """The binary's symbols checked and its amplifier planned (or why not)."""
        options, target = prepared.options, prepared.target
        assert target is not None
        scenario = options.scenario
        if target.degraded and scenario.requires_symbols:
            prepared.missing = list(scenario.requires_symbols)
            prepared.why_not = (
                f"scenario {scenario.name} needs {', '.join(scenario.requires_symbols)}, "
                f"which cannot be checked: {target.degraded[0]}"
            )
            return prepared
        missing = missing_symbols(target.symbols, scenario.requires_symbols)
        if missing:
            prepared.missing = missing
            prepared.why_not = (
                f"scenario {scenario.name} needs {', '.join(missing)}, "
                "which this build does not define"
            )
            return prepared
        if scenario.workload is not None:
            fitted, prepared.left_out = fit_workload(
                scenario, detect(target.binary, target.symbols)
            )
            if fitted.workload is None and fitted.flood.concurrency == 0:
                prepared.why_not = (
                    f"this build has no part of workload {scenario.workload_name}: "
                    + "; ".join(prepared.left_out[:4])
                )
                return prepared
            prepared.options = options = replace(options, scenario=fitted)
        try:
            prepared.amplifier = self._amplifier(target, options)
        except NotApplicable as error:
            prepared.why_not = error.message
        return prepared

    def _amplifier(self, target: Target, options: VerifyOptions) -> Amplifier:
        kind = options.amplify or options.scenario.amplify_default
        if kind != AmplifierKind.AUTO:
            return plan_amplifier(
                kind,
                options.scenario,
                target.symbols,
                self.tools_dir,
                options.delay_us,
                options.amplify_every,
            )
        if target.degraded:
            raise NotApplicable(f"--amplify auto needs symbols: {target.degraded[0]}")
        # one memory for every scenario and command: a credit is a point's hangs per class,
        # whatever flood found it (flood, everything), and verify's learning is bisect's
        memory = options.auto_memory or self.auto_dir / AUTO_MEMORY
        # one plan per build for this core's life: a bisect prepares its bad end once per
        # try, and a fresh plan would stretch the same credited point every time (seen on
        # upstream 1.4.6: 12 tries of a point that had missed, never the one that hangs)
        key = (target.key, str(memory), str(options.hunted), options.scenario.name)
        if key not in self._auto_plans:
            if memory not in self._auto_memories:
                self._auto_memories[memory] = AutoMemory.load(memory)
            settings = trial_settings(options, target, options.soak_s)
            self._auto_plans[key] = auto_plan(
                target.binary,
                target.key,
                server_config(
                    target.binary, options.scenario, settings, runtime_env(settings.sanitizer, None)
                ),
                flood_config(1, options.scenario, settings),
                self.tools_dir,
                self.auto_dir,
                self._auto_memories[memory],
                options.hunted,
                self.auto_sweep,
            )
        return self._auto_plans[key]

    def soak(self, prepared: Prepared, run_dir: Path, plan: SoakPlan) -> list[TrialResult]:
        """``plan.count`` trials; with ``plan.total_soak_s``, as many as it takes to spend it."""
        if not prepared.applicable or prepared.target is None or prepared.amplifier is None:
            raise BadInput(f"cannot soak: {prepared.why_not or 'not prepared'}")
        options, target, amplifier = prepared.options, prepared.target, prepared.amplifier
        trials: list[TrialResult] = []
        spent = 0.0
        # with a total, trials go on until it is spent (a trial can end a little short of
        # its soak: the loaded seconds are counted per tick), a few past ``count`` at most
        last = plan.count if plan.total_soak_s is None else plan.count + EXTRA_TRIALS_FOR_TOTAL
        for index in range(1, last + 1):
            if plan.total_soak_s is None:
                this_soak = plan.soak_s
            elif plan.total_soak_s - spent <= 0:
                break
            else:  # a remainder too short to flood at full strength is rounded up
                this_soak = min(plan.soak_s, max(plan.total_soak_s - spent, MIN_TRIAL_SOAK_S))
            trial = run_trial(
                index,
                target.binary,
                options.scenario,
                amplifier.for_trial(index),
                trial_settings(options, target, this_soak),
                unique_dir(run_dir, f"{plan.label}-{index}"),
                self.progress,
            )
            amplifier.observe(trial)
            if trial.clients is not None:
                trial.clients.left_out = list(prepared.left_out)
            if trial.stretched or prepared.left_out:  # known only here, after the trial
                write_json(Path(trial.run_dir) / "trial.json", trial.to_json())
            trials.append(trial)
            spent += trial.soak_s
            if trial.outcome == TrialOutcome.ERROR:
                break
            if plan.stop_at_first_bug and is_this_bug(trial, options.hunted, options.set_aside):
                break  # another bug's hang says nothing about this one: the next trial goes on
        return trials

    def verify(
        self, request: BuildRequest | Target, options: VerifyOptions, run_dir: Path
    ) -> VerifyOutcome:
        """The whole use case: prepare, soak (after a baseline, if asked), decide. A
        ``Target`` instead of a request verifies a shipped binary as it is."""
        started = time.time()
        with self._prepared(request, options) as prepared:
            if not prepared.applicable:
                verdict = Verdict(VerdictKind.NOT_APPLICABLE, f"NOT APPLICABLE: {prepared.why_not}")
                return VerifyOutcome(prepared, [], verdict, run_dir, started, time.time() - started)
            baseline = None
            plan = SoakPlan(options.trials, options.soak_s)
            if options.baseline:
                if isinstance(request, Target):
                    raise BadInput("--baseline needs a build (the baseline leaves out a --patch)")
                baseline = self.baseline(request, options, run_dir)
                if not math.isfinite(baseline.required_soak_s):
                    verdict = Verdict(
                        VerdictKind.INCONCLUSIVE,
                        f"INCONCLUSIVE: the unpatched build did not hang in "
                        f"{baseline.exposure_s:.0f} s (baseline), so no soak length can show "
                        "the patch fixes it",
                    )
                    return VerifyOutcome(
                        prepared, [], verdict, run_dir, started, time.time() - started, baseline
                    )
                required = baseline.required_soak_s
                plan = SoakPlan(
                    max(1, math.ceil(required / options.soak_s)), options.soak_s, required
                )
            trials = self.soak(prepared, run_dir, plan)
            assert prepared.amplifier is not None
            verdict = decide(
                trials,
                hunted=options.hunted,
                hunted_report=options.hunt_report,
                confidence=options.confidence,
                amplified=prepared.amplifier.kind != AmplifierKind.NONE,
                pass_note=prepared.amplifier.pass_note(),
                needs_emfile=options.scenario.exercise.emfile,
                needs_commands=options.scenario.exercise.commands,
                set_aside=options.set_aside,
            )
            comparison = None
            if baseline is not None:
                decided = verdict.kind in (VerdictKind.PASS, VerdictKind.HANG, VerdictKind.CRASH)
                aside = options.set_aside
                patched = summarize(
                    "patched", trials, options.hunted, exercised=decided, set_aside=aside
                )
                comparison = compare(baseline.summary(), patched, options.confidence)
            return VerifyOutcome(
                prepared,
                trials,
                verdict,
                run_dir,
                started,
                time.time() - started,
                baseline,
                comparison,
            )

    @contextlib.contextmanager
    def _prepared(
        self, request: BuildRequest | Target, options: VerifyOptions
    ) -> Iterator[Prepared]:
        if isinstance(request, Target):
            yield self.prepare_binary(request, options)
        else:
            with self.prepare(request, options) as prepared:
                yield prepared

    def baseline(self, request: BuildRequest, options: VerifyOptions, run_dir: Path) -> Baseline:
        """Time-to-hang of the build without the patch under test (the last --patch; earlier
        ones, such as fixtures, stay): the rate the patched soak must beat."""
        if not request.patches:
            raise BadInput(
                "--baseline needs a --patch to test (the baseline is the build without it)"
            )
        unpatched = replace(request, patches=request.patches[:-1])
        with self.prepare(unpatched, options) as prepared:
            if not prepared.applicable:
                raise NotApplicable(f"baseline: {prepared.why_not}")
            plan = SoakPlan(
                options.baseline_trials, options.soak_s, stop_at_first_bug=False, label="baseline"
            )
            trials = self.soak(prepared, run_dir / "baseline", plan)
        seen = summarize("unpatched", trials, options.hunted, set_aside=options.set_aside)
        return Baseline(
            commit=prepared.commit,
            trials=seen.trials,
            hangs=seen.hangs,
            times_to_hang_s=seen.times_to_hang_s,
            exposure_s=seen.exposure_s,
            rate_lower_bound_per_s=rate_lower_bound(
                seen.exposure_s, seen.hangs, options.confidence
            ),
            required_soak_s=soak_for_fix(seen.hangs, seen.exposure_s, options.confidence),
        )


def verify(
    builder: Builder,
    request: BuildRequest | Target,
    options: VerifyOptions,
    tools_dir: Path,
    run_dir: Path,
    progress: Progress | None = None,
) -> VerifyOutcome:
    """The whole use case in one call (see ``VerifyCore``)."""
    return VerifyCore(builder, tools_dir, progress).verify(request, options, run_dir)
