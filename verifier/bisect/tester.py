"""Test one commit for the bisector through the verify core: prepare it, soak it once.

The observation says whether THIS bug hung: a hang whose bug key differs from the
reference (the bad endpoint's) is another bug, reported but never used as evidence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from verifier.bisect.observation import Observation
from verifier.build.builder import BuildRequest
from verifier.errors import (
    BuildFailed,
    HarnessError,
    NoRecipe,
    PatchAlreadyApplied,
    PatchDoesNotApply,
)
from verifier.records.trial import TrialResult
from verifier.scenario import Scenario
from verifier.verdict.verdict import OtherBug, is_other_bug, reported
from verifier.verify import SoakPlan, VerifyCore, VerifyOptions, unique_dir
from verifier.vocabulary import HangClass, ObservationKind, SkipCause, TrialOutcome


@dataclass
class CommitTester:
    core: VerifyCore
    base_request: BuildRequest
    options: VerifyOptions
    run_root: Path
    # the bad end's hang class, once it hung: what auto hunts from then on (its credits
    # for that class only). Seen on upstream 1.4.5..1.4.6 hunting any hang: the steps
    # before the self-deadlock's commit hung on the lost wake-up, credited its point, and
    # every later step stretched that point and hung on the other bug, 16 times
    reference_class: HangClass | None = None
    _counter: int = field(default=0, init=False)

    @property
    def scenario(self) -> Scenario:
        return self.options.scenario

    def is_built(self, sha: str) -> bool:
        return self.core.builder.is_cached(replace(self.base_request, ref=sha))

    def test(self, sha: str, soak_s: float, reference_bug_key: str | None) -> Observation:
        """One soak of ``sha``. A build killed from outside (OOM, timeout, full disk) is
        tried once more; killed twice, the bisect stops (resumable) rather than skipping,
        for good, a commit that may be the culprit."""
        try:
            return self._test(sha, soak_s, reference_bug_key)
        except BuildFailed as error:
            if not error.transient:
                raise
        try:
            return self._test(sha, soak_s, reference_bug_key)
        except BuildFailed as error:
            if not error.transient:
                raise
            raise HarnessError(
                f"the build of {sha[:12]} was killed twice ({error.message}); free memory or "
                "disk, then run the same command to resume"
            ) from None

    def _test(self, sha: str, soak_s: float, reference_bug_key: str | None) -> Observation:
        started = time.monotonic()
        request = replace(self.base_request, ref=sha)
        options = self.options
        if options.hunted is None and self.reference_class is not None:
            options = replace(options, hunt=self.reference_class)
        try:
            with self.core.prepare(request, options) as prepared:
                build = prepared.build
                cached = build is not None and build.cache_hit
                build_s = build.build_seconds if build is not None and not cached else 0.0
                if not prepared.applicable:
                    return Observation(
                        sha,
                        ObservationKind.SKIP,
                        cause=SkipCause.NOT_APPLICABLE,
                        reason=prepared.why_not,
                        build_seconds=build_s,
                        build_cached=cached,
                    )
                self._counter += 1
                run_dir = unique_dir(self.run_root, f"{self._counter:03d}-{sha[:12]}")
                (trial,) = self.core.soak(prepared, run_dir, SoakPlan(1, soak_s))
        except BuildFailed as error:
            if error.transient:
                raise
            return Observation(
                sha,
                ObservationKind.SKIP,
                cause=SkipCause.DOES_NOT_BUILD,
                reason=str(SkipCause.DOES_NOT_BUILD),
                build_seconds=time.monotonic() - started,
                detail=error.message,
            )
        except (PatchDoesNotApply, PatchAlreadyApplied, NoRecipe) as error:
            # a patch that stops applying (or a gap in the recipes) mid-range: this commit
            # tells nothing, the others still do
            cause = (
                SkipCause.NO_RECIPE
                if isinstance(error, NoRecipe)
                else SkipCause.PATCH_DOES_NOT_APPLY
            )
            return Observation(sha, ObservationKind.SKIP, cause=cause, reason=error.message)
        if trial.outcome == TrialOutcome.ERROR:
            raise HarnessError(f"trial on {sha[:12]} failed: {trial.error}")
        return observation_of(
            sha,
            trial,
            self.options.hunted,
            reference_bug_key,
            build_seconds=build_s,
            cached=cached,
            needs_emfile=self.options.scenario.exercise.emfile,
            hunted_report=self.options.hunt_report,
            set_aside=self.options.set_aside,
            same_bug=self.options.scenario.same_bug,
        )


def shape_of(bug_key: str) -> str:
    """A bug key's end: "crash" (crash:SIGNAL) or "hang:CLASS" (CLASS:...)."""
    head = bug_key.split(":", 1)[0]
    return "crash" if head == "crash" else f"hang:{head}"


def one_bug(key: str, reference: str, same_bug: frozenset[str]) -> bool:
    """The reference bug again: its key, or another end the scenario says it takes."""
    return key == reference or (shape_of(key) in same_bug and shape_of(reference) in same_bug)


def observation_of(
    sha: str,
    trial: TrialResult,
    hunted: HangClass | None,
    reference_bug_key: str | None,
    *,
    build_seconds: float,
    cached: bool,
    needs_emfile: bool = True,
    hunted_report: str | None = None,
    set_aside: frozenset[HangClass] = frozenset(),
    same_bug: frozenset[str] = frozenset(),
) -> Observation:
    """What one soak of ``sha`` tells the bisector (pure). Before the bad end has hung, the
    hunted class is the reference (any hang, or a crash, when nothing is hunted); after,
    the bad end's bug key: anything else is another bug."""
    common: dict[str, Any] = {
        "build_seconds": build_seconds,
        "build_cached": cached,
        "run_dir": trial.run_dir,
        "emfile_episodes": trial.emfile_episodes,
        "stretched": str(trial.stretched.get("named") or trial.stretched.get("described", "")),
    }
    finding = reported(trial, hunted_report)
    if finding is not None:
        # hunting a sanitizer report: its signature is the bug key, so another report on
        # an intermediate commit is another bug
        key = f"sanitizer:{finding.signature}"
        same = reference_bug_key in (None, key) and (
            not hunted_report or finding.matches(hunted_report)
        )
        reason = "" if same else f"different report: {finding.signature}"
        other = None
        if not same:
            other = OtherBug(
                trial.outcome, None, key, trial.soak_s, trial.run_dir, sha=sha, reason=reason
            )
        kind = ObservationKind.HANG if same else ObservationKind.OTHER_BUG
        return Observation(sha, kind, trial.soak_s, reason, bug_key=key, other_bug=other, **common)
    if trial.outcome == TrialOutcome.CRASH:
        # the bug when nothing is hunted and the bad end crashed (its key then: the
        # signal): a find-fix of a crash bug, such as 1.6.40's slab mover SIGSEGV, had
        # stopped at the bad end ("did not hang"); once a hang is the reference, or a class
        # is hunted, a crash is another bug
        key = f"crash:{trial.crash_signal}"
        if reference_bug_key is None:
            same = hunted is None and not hunted_report
        else:
            same = one_bug(key, reference_bug_key, same_bug)
            key = reference_bug_key if same else key
        if same:
            at = trial.time_to_hang_s if trial.time_to_hang_s is not None else trial.soak_s
            return Observation(sha, ObservationKind.HANG, at, bug_key=key, **common)
        reason = f"crash ({trial.crash_signal})"
        other = OtherBug.from_trial(trial, sha=sha, reason=reason)
        kind = ObservationKind.OTHER_BUG
        return Observation(sha, kind, trial.soak_s, reason, bug_key=key, other_bug=other, **common)
    if is_other_bug(trial, hunted, set_aside) and hunted is None:
        # the scenario sets this class aside: another bug its flood meets first (1.4.5's
        # lost wake-up, when the libevent misuse is bisected)
        assert trial.diagnosis is not None
        reason = f"set aside: {trial.hang_class}"
        other = OtherBug.from_trial(trial, sha=sha, reason=reason)
        return Observation(
            sha,
            ObservationKind.OTHER_BUG,
            trial.soak_s,
            reason,
            bug_key=trial.diagnosis.bug_key,
            other_bug=other,
            **common,
        )
    if trial.outcome in (TrialOutcome.HANG, TrialOutcome.WRONG):
        witness = trial.witness
        if trial.outcome == TrialOutcome.WRONG:
            assert witness is not None
            key = witness.bug_key
        else:
            assert trial.diagnosis is not None
            key = trial.diagnosis.bug_key
        if trial.outcome == TrialOutcome.WRONG and reference_bug_key is None:
            same = hunted is None
        elif reference_bug_key is None:
            same = hunted is None or trial.hang_class == hunted
        else:
            same = one_bug(key, reference_bug_key, same_bug)
            key = reference_bug_key if same else key
        reason = "" if same else f"different bug: {trial.hang_class or key}"
        at = trial.time_to_hang_s if trial.time_to_hang_s is not None else trial.soak_s
        return Observation(
            sha,
            ObservationKind.HANG if same else ObservationKind.OTHER_BUG,
            at,
            reason=reason,
            bug_key=key,
            hang_class=trial.hang_class,
            other_bug=None if same else OtherBug.from_trial(trial, sha=sha, reason=reason),
            **common,
        )
    if needs_emfile and trial.emfile_episodes == 0:
        reason = "the flood never reached EMFILE (no evidence)"
        kind, cause = ObservationKind.SKIP, SkipCause.NO_EXPOSURE
        return Observation(sha, kind, trial.soak_s, reason, cause=cause, **common)
    return Observation(sha, ObservationKind.CLEAN, trial.soak_s, **common)
