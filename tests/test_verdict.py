"""Verdict statistics and decisions (pure logic)."""

from __future__ import annotations

import math

import pytest

from verifier.errors import ExitStatus
from verifier.verdict.stats import (
    rate_lower_bound,
    rate_upper_bound,
    soak_for_fix,
    trial_upper_bound,
)
from verifier.verdict.verdict import TrialResult, decide, expectation_met


def test_rule_of_three() -> None:
    assert rate_upper_bound(100.0) == pytest.approx(-math.log(0.05) / 100.0)
    assert rate_upper_bound(100.0) == pytest.approx(0.03, rel=0.01)
    assert trial_upper_bound(10) == pytest.approx(1 - 0.05**0.1)
    assert rate_upper_bound(0.0) == math.inf


def test_poisson_bounds_bracket_the_estimate() -> None:
    low, high = rate_lower_bound(100.0, 5), rate_upper_bound(100.0, hangs=5)
    assert low < 5 / 100 < high
    assert low == pytest.approx(1.970 / 100, rel=0.01)  # Garwood 95% one-sided, k=5
    assert high == pytest.approx(10.51 / 100, rel=0.01)


def test_soak_for_fix_uses_the_pessimistic_rate() -> None:
    # three hangs in 10 s: the lower bound rate is ~0.082/s, so ~36.6 s of clean soak
    assert soak_for_fix(3, 10.0) == pytest.approx(-math.log(0.05) / rate_lower_bound(10.0, 3))
    assert soak_for_fix(3, 10.0) > 3 / (3 / 10.0)  # longer than the naive 3/rate
    assert soak_for_fix(0, 10.0) == math.inf


def _trial(i: int, outcome: str, soak: float = 10.0, **kw: object) -> TrialResult:
    return TrialResult(index=i, outcome=outcome, soak_s=soak, run_dir="x", **kw)  # type: ignore[arg-type]


def test_pass_is_a_bound_with_opportunities() -> None:
    verdict = decide(
        [
            _trial(1, "clean", emfile_episodes=40, amplifier_triggers=40),
            _trial(2, "clean", emfile_episodes=35, amplifier_triggers=30),
        ],
        expected_class="self-deadlock",
        amplified=True,
    )
    assert verdict.kind == "PASS" and verdict.status == ExitStatus.SUCCESS
    assert "0 hangs in 20.0 s over 2 trial(s)" in verdict.headline
    assert "75 EMFILE episodes" in verdict.headline


def test_no_emfile_or_no_trigger_is_inconclusive() -> None:
    no_emfile = decide([_trial(1, "clean")], expected_class="x")
    assert no_emfile.kind == "INCONCLUSIVE"
    no_trigger = decide([_trial(1, "clean", emfile_episodes=3)], expected_class="x", amplified=True)
    assert no_trigger.kind == "INCONCLUSIVE" and "amplifier" in no_trigger.headline


def test_another_named_bug_is_listed_and_does_not_decide_this_one() -> None:
    lost_wakeup = _trial(
        1,
        "hang",
        6.0,
        hang_class="listener-lost-wakeup",
        time_to_hang_s=4.0,
        liveness="listener dead, workers alive",
        emfile_episodes=9,
    )
    verdict = decide(
        [lost_wakeup, _trial(2, "clean", emfile_episodes=30)], expected_class="self-deadlock"
    )
    assert verdict.kind == "PASS" and verdict.status == ExitStatus.OTHER_HANG
    assert "0 hangs in 14.0 s" in verdict.headline  # clean up to the other bug's first failure
    assert "another bug hung: listener-lost-wakeup (trial 1" in verdict.headline
    assert [b["class"] for b in verdict.other_bugs] == ["listener-lost-wakeup"]
    assert expectation_met(verdict, "pass") and expectation_met(
        verdict, "hang:listener-lost-wakeup"
    )
    assert not expectation_met(verdict, "hang:self-deadlock")
    # this bug after another one: HANG, and the other one is still listed
    own = _trial(2, "hang", 3.0, hang_class="self-deadlock", time_to_hang_s=1.0, liveness="x")
    both = decide([lost_wakeup, own], expected_class="self-deadlock")
    assert both.kind == "HANG" and both.hang_class == "self-deadlock" and both.other_bugs
    # an unnamed hang could be this bug in another shape: never set aside
    unnamed = _trial(1, "hang", 3.0, hang_class="unknown", time_to_hang_s=1.0, liveness="x")
    assert decide([unnamed], expected_class="self-deadlock").kind == "HANG"


def test_hang_and_crash_are_proof_and_other_classes_are_named() -> None:
    hang = decide(
        [
            _trial(1, "clean", emfile_episodes=3),
            _trial(
                2,
                "hang",
                2.0,
                hang_class="unknown",
                time_to_hang_s=1.5,
                liveness="listener dead, workers alive",
            ),
        ],
        expected_class="self-deadlock",
    )
    assert hang.kind == "HANG" and hang.status == ExitStatus.HANG
    assert "unknown (not the scenario's self-deadlock)" in hang.headline
    assert expectation_met(hang, "hang") and not expectation_met(hang, "hang:self-deadlock")
    assert expectation_met(hang, "hang:unknown")
    crash = decide([_trial(1, "crash", crash_signal="SIGABRT")], expected_class="x")
    assert crash.kind == "CRASH" and "SIGABRT" in crash.headline
    assert not expectation_met(crash, "pass")
