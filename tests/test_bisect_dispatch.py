"""The cluster bisect's dispatcher: the endpoint checks at once, then each free machine's
step planned with its own builds, and a re-soak sent back to the machine that built it
(pure, no I/O); a soak that started before the reference bug was known is judged later."""

from __future__ import annotations

import json
from dataclasses import replace

from verifier.bisect.dispatch import Endpoints, Job, Role, assign, good_end_soak_s, next_job
from verifier.bisect.model import Soak
from verifier.bisect.observation import Observation, judged
from verifier.bisect.planner import FlakyBisector
from verifier.bisect.remote import SoakJob
from verifier.bisect.tester import observation_of
from verifier.evidence.classify import Diagnosis
from verifier.records.trial import TrialResult
from verifier.vocabulary import HangClass, HangProof, Liveness, ObservationKind, TrialOutcome

N = 64
BUDGET = 24.0


def _jobs(bisector: FlakyBisector, ends: Endpoints, machines: int) -> list[Job]:
    pending: list[Job] = []
    for _ in range(machines):
        job = next_job(bisector, ends, pending, set(), endpoint_soak_s=BUDGET, good_end_soak_s=13)
        if job is None:
            break
        pending.append(job)
        ends.good_end_started |= job.role == Role.GOOD_END
    return pending


def test_the_endpoints_are_soaked_at_once() -> None:
    bisector = FlakyBisector(N, 0.95, max_soak_s=BUDGET, min_soak_s=3)
    jobs = _jobs(bisector, Endpoints(tries=3), machines=4)
    # the bad end, the good end (for the bad end's budget: no rate known yet), two more
    # tries of the bad end; nothing else until the bad end hangs
    assert [j.role for j in jobs] == [Role.BAD_END, Role.GOOD_END, Role.BAD_END, Role.BAD_END]
    assert [j.step.index for j in jobs] == [N, 0, N, N]
    assert all(j.step.soak_seconds == BUDGET for j in jobs)
    assert _jobs(bisector, Endpoints(tries=3), machines=8) == jobs  # at most 3 tries


def test_one_machine_checks_the_endpoints_one_after_the_other() -> None:
    bisector = FlakyBisector(N, 0.95, max_soak_s=BUDGET, min_soak_s=3)
    ends = Endpoints(tries=3)
    (first,) = _jobs(bisector, ends, machines=1)
    assert first.role == Role.BAD_END
    bisector.record_endpoint(Soak(N, 2.0, True))
    ends.tries_done, ends.bad_end_hung = 1, True
    good = good_end_soak_s(bisector, 3.0, BUDGET)
    assert good == 10.0  # five mean times to hang, now that one is known
    (second,) = _jobs(bisector, ends, machines=1)
    assert (second.role, second.step.index, second.step.soak_seconds) == (Role.GOOD_END, 0, 13)


def test_a_re_soak_goes_to_the_machine_that_built_the_commit() -> None:
    bisector = FlakyBisector(N, 0.95, max_soak_s=BUDGET, min_soak_s=3, calibration_hangs=0)
    for seconds in (2.0, 3.0, 2.5):
        bisector.record_endpoint(Soak(N, seconds, True))
    bisector.record_endpoint(Soak(0, 13.0, False))
    ends = Endpoints(tries=3, tries_done=3, bad_end_hung=True, good_end_started=True)
    job = next_job(bisector, ends, [], set(), endpoint_soak_s=BUDGET, good_end_soak_s=13)
    assert job is not None and job.role == Role.STEP
    # the machine that has built the best commit gets it (no build there)
    free = {"tcp://a": set(), "tcp://b": {job.step.index}, "tcp://c": set()}
    chosen = assign(bisector, ends, [], free, endpoint_soak_s=BUDGET, good_end_soak_s=13)
    assert chosen is not None and chosen[0] == "tcp://b"
    assert chosen[1].step.index == job.step.index


def test_a_hang_judged_against_a_reference_found_later() -> None:
    hang = Observation("abc", ObservationKind.HANG, 2.0, bug_key="lost-wakeup:x", run_dir="h:/r")
    assert judged(hang, None) == hang
    assert judged(hang, "lost-wakeup:x") == hang
    other = judged(hang, "self-deadlock:y")
    assert other.kind == ObservationKind.OTHER_BUG and not other.evidence
    assert other.other_bug is not None and other.other_bug.bug_key == "lost-wakeup:x"
    assert other.reason == "different bug: lost-wakeup:x"


def test_a_remote_soak_builds_what_the_local_one_would() -> None:
    """A soak sent to a worker carries the build's sanitizer and TLS: without them the
    worker soaked a plain build (found in review: both were dropped)."""
    job = SoakJob(
        source="debian", sha="a" * 40, soak_s=5.0, reference_bug_key=None,
        reference_class="self-deadlock", patches=(("fix.diff", "text"),), reverse=False,
        cflags=None, scenario="flood", scenario_text="name = 'flood'", options={},
        sanitizer="address", tls=True,
    )  # fmt: skip
    again = SoakJob.from_json(json.loads(json.dumps(job.to_json())))
    assert again == job and again.tls and again.sanitizer == "address"


def test_a_crash_at_the_bad_end_is_the_bug_a_find_fix_follows() -> None:
    """Nothing hunted: a crash at the bad end is the bug (upstream 1.6.40's slab mover
    SIGSEGV: the find-fix bisect had stopped with "the bad end did not hang"); the same
    crash later is evidence, another signal or a hang is another bug; while a hang class
    is hunted a crash stays another bug."""
    crash = replace(TrialResult(1, TrialOutcome.CRASH, 3.5, "", "socket"), crash_signal="SIGSEGV")
    first = observation_of("a" * 40, crash, None, None, build_seconds=0, cached=True)
    assert (first.kind, first.bug_key) == (ObservationKind.HANG, "crash:SIGSEGV")
    again = observation_of("b" * 40, crash, None, "crash:SIGSEGV", build_seconds=0, cached=True)
    assert again.kind == ObservationKind.HANG and again.evidence
    abort = replace(crash, crash_signal="SIGABRT")
    other = observation_of("c" * 40, abort, None, "crash:SIGSEGV", build_seconds=0, cached=True)
    assert other.kind == ObservationKind.OTHER_BUG
    hunted = observation_of(
        "d" * 40, crash, HangClass.SELF_DEADLOCK, None, build_seconds=0, cached=True
    )
    assert hunted.kind == ObservationKind.OTHER_BUG


def test_the_ends_a_scenario_names_as_one_bug_and_the_classes_it_sets_aside() -> None:
    """1.4.5's libevent corruption exits (libevent's own check) or spins in libevent: with
    ``same_bug`` a bisect whose bad end crashed takes the spin as the same bug (keyed as the
    reference, so a later judgement agrees); the lost wake-up it sets aside is another bug
    even before any reference, where nothing hunted would otherwise take any hang."""
    crash = replace(TrialResult(1, TrialOutcome.CRASH, 3.5, "", "socket"), crash_signal="exit 1")
    spin = TrialResult(
        2, TrialOutcome.HANG, 6.0, "", "socket",
        diagnosis=Diagnosis(HangClass.LIVELOCK, Liveness.WORKERS_ALIVE, "x", proof=HangProof.SPIN,
                            details={"function": "event_active_nolock_"}),
    )  # fmt: skip
    shapes = frozenset({"crash", "hang:livelock"})
    reference = observation_of("0" * 40, crash, None, None, build_seconds=0, cached=True).bug_key
    assert reference == "crash:exit 1"
    alone = observation_of("a" * 40, spin, None, reference, build_seconds=0, cached=True)
    assert alone.kind == ObservationKind.OTHER_BUG  # without the scenario's word: two bugs
    same = observation_of(
        "a" * 40, spin, None, reference, build_seconds=0, cached=True, same_bug=shapes
    )
    assert (same.kind, same.bug_key) == (ObservationKind.HANG, reference)
    assert judged(same, reference) == same
    lost = TrialResult(
        3, TrialOutcome.HANG, 6.0, "", "socket",
        diagnosis=Diagnosis(HangClass.LOST_WAKEUP, Liveness.WORKERS_ALIVE, "x",
                            proof=HangProof.STATE),
    )  # fmt: skip
    aside = frozenset({HangClass.LOST_WAKEUP})
    first = observation_of("b" * 40, lost, None, None, build_seconds=0, cached=True)
    assert first.kind == ObservationKind.HANG  # nothing hunted, nothing set aside: the bug
    set_aside = observation_of(
        "b" * 40, lost, None, None, build_seconds=0, cached=True, set_aside=aside
    )
    assert set_aside.kind == ObservationKind.OTHER_BUG
    assert set_aside.reason == "set aside: listener-lost-wakeup"
