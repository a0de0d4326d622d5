"""The k-machine planner: a free machine's step given the soaks still running elsewhere
(pure statistics, no I/O)."""

from __future__ import annotations

import itertools

import pytest

from verifier.bisect.model import Soak
from verifier.bisect.planner import (
    FlakyBisector,
    Step,
    _outcome_patterns,
    conditional_gains,
    gains_for_soak,
    plan_next,
    plan_with_pending,
)

N = 64


def _calibrated(**kwargs: float) -> FlakyBisector:
    bisector = FlakyBisector(N, 0.95, max_soak_s=60, min_soak_s=5, calibration_hangs=0, **kwargs)
    for seconds in (20.0, 35.0, 50.0):  # the bad end hung three times: λ is known roughly
        bisector.record_endpoint(Soak(N, seconds, True))
    return bisector


def test_with_nothing_pending_the_gains_are_the_one_machine_gains() -> None:
    bisector = _calibrated()
    bisector.record(Soak(40, 30.0, False))
    post = bisector.posterior
    patterns = _outcome_patterns(post, [])
    for seconds in (5.0, 30.0, 60.0):
        alone = gains_for_soak(post, seconds)[0]
        assert conditional_gains(post, seconds, patterns) == pytest.approx(alone, abs=1e-9)
    cost = {"build_cost": lambda i: 0.0, "overhead_s": 2.0, "min_soak_s": 5.0}
    assert plan_with_pending(post, range(1, N + 1), [], max_soak_s=60.0, **cost) == plan_next(
        post, range(1, N + 1), max_soak_s=60.0, **cost
    )


def test_a_pending_soak_is_worth_less_a_second_time() -> None:
    post = _calibrated().posterior
    first = Step(32, 60.0, 0.0, 0.5)
    patterns = _outcome_patterns(post, [first])
    given = conditional_gains(post, 60.0, patterns)
    alone = gains_for_soak(post, 60.0)[0]
    assert given[32] < 0.75 * alone[32]  # partly known once the first answers
    assert given[16] > 0.8 * alone[16]  # a commit far from it keeps most of its value


def test_machines_spread_over_the_range() -> None:
    bisector = _calibrated()
    pending: list[Step] = []
    for _ in range(4):
        step = bisector.next_step(pending=pending, built={0, N})
        assert step is not None
        pending.append(step)
    picks = sorted(s.index for s in pending)
    assert len(set(picks)) == 4
    assert all(b - a >= 5 for a, b in itertools.pairwise(picks))
    assert picks[0] < N // 3 and picks[-1] > 2 * N // 3  # a k-ary split, not one pile


def test_calibration_is_shared_among_free_machines() -> None:
    bisector = FlakyBisector(N, 0.95, max_soak_s=60, min_soak_s=5, calibration_hangs=2)
    bisector.record_endpoint(Soak(N, 60.0, False))
    pending: list[Step] = []
    for _ in range(3):
        step = bisector.next_step(pending=pending, built={0, N})
        assert step is not None
        pending.append(step)
    assert [s.calibration for s in pending] == [True, True, False]
    assert pending[2].index not in (0, N)


def test_a_machine_that_has_not_built_a_commit_pays_for_it() -> None:
    bisector = _calibrated(default_build_s=10.0)
    here = bisector.next_step(pending=[], built={0, N})
    elsewhere = bisector.next_step(pending=[], built=set())
    assert here is not None and elsewhere is not None
    assert here.expected_cost_s == pytest.approx(elsewhere.expected_cost_s)  # both must build
    on_it = bisector.next_step(pending=[], built={0, N, here.index})
    assert on_it is not None and on_it.expected_cost_s < here.expected_cost_s
