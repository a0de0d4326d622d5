"""Verdict statistics and decisions (pure logic)."""

from __future__ import annotations

import math

import pytest

from verifier.errors import BadInput, ExitStatus
from verifier.evidence.classify import Diagnosis
from verifier.records.trial import FloodSummary, TrialResult
from verifier.stress.tally import ClientReport, CommandSeen
from verifier.verdict.stats import (
    rate_lower_bound,
    rate_upper_bound,
    soak_for_fix,
    trial_upper_bound,
)
from verifier.verdict.verdict import Expectation, Verdict, decide
from verifier.vocabulary import HangClass, HangProof, Liveness, TrialOutcome, VerdictKind


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


def expectation_met(verdict: Verdict, text: str) -> bool:
    return Expectation.parse(text).met_by(verdict)


def _trial(
    i: int,
    outcome: str,
    soak: float = 10.0,
    hang_class: str | None = None,
    liveness: str = Liveness.WORKERS_ALIVE,
    **kw: object,
) -> TrialResult:
    diagnosis = None
    if hang_class is not None:
        diagnosis = Diagnosis(HangClass(hang_class), Liveness(liveness), "x", proof=HangProof.CYCLE)
    return TrialResult(
        index=i,
        outcome=TrialOutcome(outcome),
        soak_s=soak,
        run_dir="x",
        diagnosis=diagnosis,
        **kw,  # type: ignore[arg-type]
    )


def test_pass_is_a_bound_with_opportunities() -> None:
    verdict = decide(
        [
            _trial(1, "clean", emfile_episodes=40, amplifier_triggers=40),
            _trial(2, "clean", emfile_episodes=35, amplifier_triggers=30),
        ],
        hunted=HangClass.SELF_DEADLOCK,
        amplified=True,
    )
    assert verdict.kind == "PASS" and verdict.status == ExitStatus.SUCCESS
    assert "0 hangs in 20.0 s over 2 trial(s)" in verdict.headline
    assert "75 EMFILE episodes" in verdict.headline


def test_no_emfile_or_no_trigger_is_inconclusive() -> None:
    no_emfile = decide([_trial(1, "clean")], hunted=None)
    assert no_emfile.kind == "INCONCLUSIVE"
    no_trigger = decide([_trial(1, "clean", emfile_episodes=3)], hunted=None, amplified=True)
    assert no_trigger.kind == "INCONCLUSIVE" and "amplifier" in no_trigger.headline


def test_another_named_bug_is_listed_and_does_not_decide_this_one() -> None:
    lost_wakeup = _trial(
        1,
        "hang",
        6.0,
        hang_class="listener-lost-wakeup",
        time_to_hang_s=4.0,
        emfile_episodes=9,
    )
    verdict = decide(
        [lost_wakeup, _trial(2, "clean", emfile_episodes=30)], hunted=HangClass.SELF_DEADLOCK
    )
    assert verdict.kind == "PASS" and verdict.status == ExitStatus.OTHER_HANG
    assert "0 hangs in 14.0 s" in verdict.headline  # clean up to the other bug's first failure
    assert "another bug hung: listener-lost-wakeup (trial 1" in verdict.headline
    assert [b.hang_class for b in verdict.other_bugs] == [HangClass.LOST_WAKEUP]
    assert expectation_met(verdict, "pass") and expectation_met(
        verdict, "hang:listener-lost-wakeup"
    )
    assert not expectation_met(verdict, "hang:self-deadlock")
    # this bug after another one: HANG, and the other one is still listed
    own = _trial(2, "hang", 3.0, hang_class="self-deadlock", time_to_hang_s=1.0)
    both = decide([lost_wakeup, own], hunted=HangClass.SELF_DEADLOCK)
    assert both.kind == "HANG" and both.hang_class == "self-deadlock" and both.other_bugs
    # an unnamed hang could be this bug in another shape: never set aside
    unnamed = _trial(1, "hang", 3.0, hang_class="unknown", time_to_hang_s=1.0)
    assert decide([unnamed], hunted=HangClass.SELF_DEADLOCK).kind == "HANG"


def test_a_class_the_scenario_sets_aside_never_decides_a_crash_hunt() -> None:
    """listener-libevent-flood hunts no class (a crash, or any wedged listener), but 1.4.5's
    flood meets the lost wake-up first: set aside, it is listed and the soak goes on."""
    aside = frozenset({HangClass.LOST_WAKEUP})
    lost_wakeup = _trial(1, "hang", 6.0, hang_class="listener-lost-wakeup", time_to_hang_s=4.0,
                         emfile_episodes=9)  # fmt: skip
    crash = _trial(2, "crash", 3.0, crash_signal="SIGSEGV", time_to_hang_s=2.5)
    assert decide([lost_wakeup], hunted=None).kind == "HANG"  # nothing set aside: the bug
    verdict = decide([lost_wakeup, _trial(2, "clean", emfile_episodes=30)], hunted=None,
                     set_aside=aside)  # fmt: skip
    assert verdict.kind == "PASS" and verdict.status == ExitStatus.OTHER_HANG
    assert [b.hang_class for b in verdict.other_bugs] == [HangClass.LOST_WAKEUP]
    both = decide([lost_wakeup, crash], hunted=None, set_aside=aside)
    assert both.kind == "CRASH" and [b.hang_class for b in both.other_bugs] == [
        HangClass.LOST_WAKEUP
    ]
    # what is not set aside still decides: another named class, and an unnamed hang
    deadlock = _trial(1, "hang", 3.0, hang_class="self-deadlock", time_to_hang_s=1.0)
    assert decide([deadlock], hunted=None, set_aside=aside).kind == "HANG"
    unnamed = _trial(1, "hang", 3.0, hang_class="unknown", time_to_hang_s=1.0)
    assert decide([unnamed], hunted=None, set_aside=aside).kind == "HANG"
    # the class hunted is never set aside
    hunted = decide([lost_wakeup], hunted=HangClass.LOST_WAKEUP, set_aside=aside)
    assert hunted.kind == "HANG"


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
            ),
        ],
        hunted=HangClass.SELF_DEADLOCK,
    )
    assert hang.kind == "HANG" and hang.status == ExitStatus.BUG_SEEN
    assert "unknown (not the scenario's self-deadlock)" in hang.headline
    assert expectation_met(hang, "hang") and not expectation_met(hang, "hang:self-deadlock")
    assert expectation_met(hang, "hang:unknown")
    crash = decide([_trial(1, "crash", crash_signal="SIGABRT")], hunted=None)
    assert crash.kind == "CRASH" and "SIGABRT" in crash.headline
    assert not expectation_met(crash, "pass")


def test_verdict_status_is_decided_in_one_place() -> None:
    """Every kind maps to its documented exit code; a CRASH has its own path to 1."""
    crash = decide([_trial(1, "crash", crash_signal="SIGSEGV")], hunted=None)
    assert crash.kind == VerdictKind.CRASH and crash.status == ExitStatus.BUG_SEEN
    error = decide([_trial(1, "error", error="boom")], hunted=None)
    assert error.kind == VerdictKind.ERROR and error.status == ExitStatus.HARNESS_ERROR
    unproven = decide(
        [_trial(1, "hang", 2.0, hang_class="self-deadlock", time_to_hang_s=1.0)],
        hunted=HangClass.SELF_DEADLOCK,
    )
    assert unproven.status == ExitStatus.BUG_SEEN and "proven by cycle" in unproven.headline


def test_with_nothing_hunted_any_named_hang_is_the_bug() -> None:
    """The generic flood scenario hunts no class: a lost wake-up is its bug, not another."""
    lost = _trial(1, "hang", 3.0, hang_class="listener-lost-wakeup", time_to_hang_s=2.0)
    verdict = decide([lost], hunted=None)
    assert verdict.kind == VerdictKind.HANG and verdict.hang_class == HangClass.LOST_WAKEUP
    assert not verdict.other_bugs


def test_a_flood_that_ended_early_is_said_and_only_its_loaded_seconds_count() -> None:
    flood = FloodSummary(
        10, 10, 1.0, 1.0, {}, 1, loaded_s=4.0, ended_early="1 flood process(es) died"
    )
    verdict = decide([_trial(1, "clean", 4.0, emfile_episodes=5, flood=flood)], hunted=None)
    assert verdict.kind == VerdictKind.PASS
    assert (
        "0 hangs in 4.0 s" in verdict.headline
        and "ended early (1 flood process" in verdict.headline
    )


@pytest.mark.parametrize("text", ["hang:", "hang:nosuchclass", "pass:self-deadlock", "fail", ""])
def test_a_bad_expectation_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput):
        Expectation.parse(text)


def test_expectations_round_trip() -> None:
    for text in ("pass", "crash", "hang", "hang:deadlock", "hang:listener-lost-wakeup"):
        assert str(Expectation.parse(text)) == text


def test_requests_left_unread_on_purpose_count_as_sent_never_as_answered() -> None:
    """A group with ``abandon`` never reads an answer: what it sent on a live connection is
    what its soak exercised, and the PASS says so in those words (1.6.43 under the binary
    refcount workload had been INCONCLUSIVE, "never had bin_getkq answered")."""

    def trial(counts: dict[str, int]) -> TrialResult:
        seen = CommandSeen("holders", "bin_getkq", "binary", counts)
        return _trial(1, "clean", 20.0, emfile_episodes=0, clients=ClientReport([seen]))

    left = decide([trial({"abandoned": 3600})], hunted=None, needs_emfile=False,
                  needs_commands=("bin_getkq",))  # fmt: skip
    assert left.kind == "PASS", left.headline
    assert "sent and left unread: 3,600 bin_getkq" in left.headline
    assert "the clients saw" not in left.headline
    never = decide([trial({"timeout": 5})], hunted=None, needs_emfile=False,
                   needs_commands=("bin_getkq",))  # fmt: skip
    assert never.kind == "INCONCLUSIVE" and "never had bin_getkq answered" in never.headline
