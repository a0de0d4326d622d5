"""Properties of the flake-aware bisection model and planner (verifier.bisect)."""

from __future__ import annotations

import json
import math
import random

import pytest

from verifier.bisect.model import CulpritPosterior, RateBelief, Soak
from verifier.bisect.planner import FlakyBisector, gains_for_soak, p_done_after, soak_grid

# -- helpers ---------------------------------------------------------------------------------


def odds_bad(post: CulpritPosterior, i: int) -> float:
    p = post.p_bad(i)
    return p / (1.0 - p)


def calibrated(n: int, rate: float, hangs: int = 400, **kw: float) -> CulpritPosterior:
    """A posterior whose λ is pinned down: the bad endpoint hung ``hangs`` times at rate λ."""
    post = CulpritPosterior(n, prior_shape=1e-3, prior_rate=1e-6, **kw)
    for _ in range(hangs):
        post.observe(Soak(n, 1.0 / rate, True))
    return post


def soak_oracle(culprit: int, hang_at: float, rng: random.Random, mean: bool = False):
    """Bad commits (index >= culprit) hang after ``hang_at`` s (± 10 %), or after an
    exponential time of that mean if ``mean``; good commits never hang."""

    def run(index: int, seconds: float) -> Soak:
        if index >= culprit:
            t = rng.expovariate(1.0 / hang_at) if mean else hang_at * rng.uniform(0.9, 1.1)
            if t < seconds:
                return Soak(index, t, True)
        return Soak(index, seconds, False)

    return run


def run_bisector(bis: FlakyBisector, run, limit: int = 1000) -> list:
    steps = []
    while (step := bis.next_step()) is not None:
        steps.append(step)
        bis.record(run(step.index, step.soak_seconds))
        assert len(steps) < limit
    return steps


# -- the model ---------------------------------------------------------------------------------


def test_rate_belief_is_the_lomax_predictive() -> None:
    rb = RateBelief(3.0, 6.0)
    assert rb.mean == pytest.approx(0.5)
    assert rb.mean_time_to_hang == pytest.approx(2.0)
    assert rb.p_no_hang(6.0) == pytest.approx((6 / 12) ** 3)
    assert rb.p_hang_within(6.0) == pytest.approx(1 - (6 / 12) ** 3)
    # Integrating λ out is more cautious than plugging in E[λ]: Jensen.
    assert rb.p_no_hang(6.0) > math.exp(-rb.mean * 6.0)
    assert rb.updated(2, 4.0) == RateBelief(5.0, 10.0)
    with pytest.raises(ValueError):
        RateBelief(0.0, 1.0)


def test_posterior_is_a_distribution_over_1_to_n() -> None:
    rng = random.Random(3)
    post = CulpritPosterior(30)
    probs = post.probabilities()
    assert len(probs) == 31 and probs[0] == 0.0
    assert all(p == pytest.approx(1 / 30) for p in probs[1:])
    post.observe(Soak(30, 4.0, True))
    for _ in range(40):
        i = rng.randint(1, 30)
        post.observe(Soak(i, rng.uniform(0.1, 50), hung=i > 20 and rng.random() < 0.3))
        probs = post.probabilities()
        assert math.fsum(probs) == pytest.approx(1.0, abs=1e-12)
        assert probs[0] == 0.0 and all(p >= 0 for p in probs)
        cum = [post.p_bad(i) for i in range(31)]
        assert cum == sorted(cum) and cum[0] == 0.0 and cum[30] == 1.0
        assert post.best()[1] == max(probs)


def test_a_hang_rules_out_every_later_culprit() -> None:
    post = CulpritPosterior(20)
    post.observe(Soak(20, 3.0, True))
    post.observe(Soak(12, 0.5, True))
    probs = post.probabilities()
    assert all(p == 0.0 for p in probs[13:])
    assert all(p > 0.0 for p in probs[1:13])
    assert post.p_bad(12) == 1.0
    # Even a later long survival at 15 cannot bring k > 12 back.
    post.observe(Soak(15, 1e6, False))
    assert post.p_bad(12) == 1.0


def test_no_hang_soak_shifts_mass_by_the_lomax_factor() -> None:
    n, i = 10, 5
    post = calibrated(n, rate=1.0)
    before = odds_bad(post, i)
    rate = post.rate_given(1)  # k <= i: λ's posterior includes commits i..n
    post.observe(Soak(i, 2.0, False))
    shift = odds_bad(post, i) / before
    # Bayes factor of "no hang in t" under bad vs good is the Lomax survival (b/(b+t))^a.
    assert shift == pytest.approx(rate.p_no_hang(2.0), rel=1e-9)
    # With λ pinned down that is ~exp(-λ t).
    assert shift == pytest.approx(math.exp(-2.0), rel=0.02)
    # Longer soaks shift more mass to k > i.
    shifts = []
    for t in (0.5, 1.0, 2.0, 4.0, 8.0):
        p = calibrated(n, rate=1.0)
        b = odds_bad(p, i)
        p.observe(Soak(i, t, False))
        shifts.append(odds_bad(p, i) / b)
    assert shifts == sorted(shifts, reverse=True)
    assert post.p_bad(i) < 0.5 and calibrated(n, rate=1.0).p_bad(i) == pytest.approx(0.5)


def test_the_shift_depends_on_soak_length_relative_to_the_time_to_hang() -> None:
    fast, slow = calibrated(10, rate=1.0), calibrated(10, rate=0.01)
    fast.observe(Soak(4, 3.0, False))
    slow.observe(Soak(4, 300.0, False))
    assert fast.probabilities() == pytest.approx(slow.probabilities(), rel=1e-3)
    # The same 3 s against a slow race barely moves anything.
    slow2 = calibrated(10, rate=0.01)
    slow2.observe(Soak(4, 3.0, False))
    assert slow2.p_bad(4) == pytest.approx(0.4, abs=0.01)  # the prior: 4 of 10
    assert fast.p_bad(4) < 0.04


def test_an_uncertain_rate_makes_a_short_soak_count_for_less() -> None:
    sure = calibrated(10, rate=1.0, hangs=400)
    unsure = calibrated(10, rate=1.0, hangs=2)  # same mean, much wider
    for post in (sure, unsure):
        post.observe(Soak(5, 3.0, False))
    assert sure.p_bad(5) < 0.06  # ~ e^-3
    assert unsure.p_bad(5) > 2 * sure.p_bad(5)


def test_soaks_on_one_commit_accumulate_like_one_long_soak() -> None:
    a, b = calibrated(10, rate=0.5), calibrated(10, rate=0.5)
    for _ in range(3):
        a.observe(Soak(6, 2.0, False))
    b.observe(Soak(6, 6.0, False))
    assert a.probabilities() == pytest.approx(b.probabilities(), rel=1e-9)
    assert a.exposure(6) == 6.0 and a.hangs(6) == 0
    assert a.p_bad(6) < calibrated(10, rate=0.5).p_bad(6)


def test_pooled_exposure_is_more_cautious_than_independent_lomax_terms() -> None:
    post = calibrated(10, rate=1.0, hangs=2)
    before = post.probabilities()[1] / post.probabilities()[10]
    post.observe(Soak(3, 2.0, False))
    post.observe(Soak(6, 2.0, False))
    after = post.probabilities()[1] / post.probabilities()[10]
    rb = calibrated(10, rate=1.0, hangs=2).rate_given(10)
    # k = 1 calls both survivors bad: one Lomax of 4 s, not the product of two of 2 s.
    assert after / before == pytest.approx(rb.p_no_hang(4.0), rel=1e-9)
    assert after / before > rb.p_no_hang(2.0) ** 2


def test_skips_widen_the_credible_set_and_group_the_culprits() -> None:
    def posterior(skip: bool) -> CulpritPosterior:
        post = calibrated(10, rate=1.0)
        post.observe(Soak(6, 0.5, True))  # 6 is bad
        post.observe(Soak(4, 50.0, False))  # 4 is good (e^-50)
        if skip:
            post.skip(5)
        else:
            post.observe(Soak(5, 50.0, False))
        return post

    clean, skipped = posterior(False), posterior(True)
    assert clean.credible_set(0.95) == [6] and clean.done(0.95)
    assert skipped.credible_set(0.95) == [5, 6]
    assert skipped.best()[1] == pytest.approx(0.5, abs=1e-6)
    group, mass = skipped.best_group()
    assert group == [5, 6] and mass == pytest.approx(1.0)
    assert skipped.done(0.95)  # confident that it is one of the two
    assert [5, 6] in skipped.groups() and [5] not in skipped.groups()
    with pytest.raises(ValueError):
        skipped.skip(10)  # the endpoints cannot be skipped


def test_false_hang_rate_keeps_a_single_hang_from_being_fatal() -> None:
    strict = calibrated(10, rate=1.0)
    strict.observe(Soak(3, 1.0, True))
    assert strict.p_bad(3) == 1.0
    lenient = calibrated(10, rate=1.0, false_hang_rate=1e-4)
    lenient.observe(Soak(3, 1.0, True))
    assert 0.9 < lenient.p_bad(3) < 1.0
    # Long survivals of commits 3..9 then overturn the lone hang.
    for i in range(3, 10):
        lenient.observe(Soak(i, 30.0, False))
    assert lenient.best()[0] == 10
    # A hang of the good endpoint contradicts every hypothesis unless ε > 0.
    with pytest.raises(ValueError):
        CulpritPosterior(5).observe(Soak(0, 1.0, True))
    post = CulpritPosterior(5, false_hang_rate=1e-3)
    post.observe(Soak(0, 1.0, True))
    assert math.fsum(post.probabilities()) == pytest.approx(1.0)


def test_prior_weights_and_impossible_observations_roll_back() -> None:
    post = CulpritPosterior(4, prior_weights=[0, 0, 1, 3])
    assert post.probabilities() == pytest.approx([0, 0, 0, 0.25, 0.75])
    aligned = CulpritPosterior(4, prior_weights=[0, 0, 0, 1, 3])
    assert aligned.probabilities() == post.probabilities()
    with pytest.raises(ValueError):
        post.observe(Soak(2, 1.0, True))  # only k <= 2 could explain it; their prior is 0
    assert post.soaks == () and post.hangs(2) == 0
    with pytest.raises(ValueError):
        CulpritPosterior(4, prior_weights=[1, 1, 1])


# -- the planner -------------------------------------------------------------------------------


def test_soak_grid_and_information_gain() -> None:
    assert soak_grid(2.0, 3.0, 30.0) == [3.0, 4.0, 6.0, 10.0, 16.0, 26.0, 30.0]
    post = calibrated(8, rate=1.0)
    gains, durations, p_bads = gains_for_soak(post, 20.0)
    assert gains[4] == pytest.approx(1.0, abs=1e-3)  # a sure split of 8 in halves: 1 bit
    assert gains[0] == 0.0 and gains[8] == pytest.approx(0.0, abs=1e-6)
    assert p_bads[4] == pytest.approx(0.5)
    assert durations[4] == pytest.approx(0.5 * 1.0 + 0.5 * 20.0, rel=0.01)  # stops at the hang
    assert p_done_after(post, 4, 20.0, 0.95) == 0.0
    post.observe(Soak(3, 0.5, True))
    post.observe(Soak(1, 50.0, False))  # culprit is 2 or 3
    assert p_done_after(post, 2, 20.0, 0.95) == pytest.approx(1.0, abs=1e-6)


def test_deterministic_race_costs_about_one_soak_per_bisection_step() -> None:
    n, budget = 20, math.ceil(math.log2(21)) + 2
    rng = random.Random(11)
    for culprit in range(1, n + 1):
        run = soak_oracle(culprit, 1.0, rng)
        bis = FlakyBisector(n, 0.95, max_soak_s=60.0, min_soak_s=3.0)
        for _ in range(3):  # the real bisector confirms the bug on the bad endpoint
            bis.record_endpoint(run(n, 60.0))
        steps = run_bisector(bis, run)
        res = bis.result()
        assert res.culprit == culprit and res.confident and res.probability >= 0.95
        assert res.steps == len(steps) <= budget, (culprit, steps)
        assert all(3.0 <= s.soak_seconds <= 60.0 for s in steps)


def test_calibration_comes_first_when_the_bug_was_seen_once() -> None:
    bis = FlakyBisector(20, max_soak_s=60.0, min_soak_s=3.0)
    bis.record_endpoint(Soak(20, 1.0, True))
    step = bis.next_step()
    assert step is not None and step.calibration and step.index == 20 and step.p_bad == 1.0
    run = soak_oracle(7, 1.0, random.Random(2))
    steps = run_bisector(bis, run)
    res = bis.result()
    assert res.culprit == 7 and res.calibration_steps == 2
    assert res.steps - res.calibration_steps <= math.ceil(math.log2(21)) + 2
    assert not any(s.calibration for s in steps[2:])


def fixed_timeout_bisect(n: int, run, timeout: float) -> int:
    """Naive baseline: plain binary search, one soak of fixed length per commit."""
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if run(mid, timeout).hung else (mid, hi)
    return hi


def test_rare_race_converges_to_the_right_commit_and_beats_fixed_timeouts() -> None:
    n, runs, mean_hang, max_soak = 20, 200, 30.0, 60.0
    ours = baseline = 0
    seeds = random.Random(2024)
    for _ in range(runs):
        culprit, seed = seeds.randint(1, n), seeds.getrandbits(32)
        run = soak_oracle(culprit, mean_hang, random.Random(seed), mean=True)
        bis = FlakyBisector(n, 0.95, max_soak_s=max_soak, min_soak_s=5.0, max_steps=400)
        while not (soak := run(n, max_soak)).hung:  # confirm the bug on the bad endpoint
            bis.record_endpoint(soak)
        bis.record_endpoint(soak)
        run_bisector(bis, run)
        res = bis.result()
        assert res.confident  # converged rather than ran out of steps
        ours += res.culprit == culprit
        base_run = soak_oracle(culprit, mean_hang, random.Random(seed), mean=True)
        baseline += fixed_timeout_bisect(n, base_run, max_soak) == culprit
    assert ours / runs >= 0.95
    assert ours / runs > baseline / runs + 0.1, (ours, baseline)


def test_skipped_commits_are_never_chosen_and_make_the_answer_ambiguous() -> None:
    n, culprit, skipped = 16, 9, {8, 12}
    run = soak_oracle(culprit, 1.0, random.Random(5))
    bis = FlakyBisector(n, max_soak_s=60.0, min_soak_s=3.0)
    for _ in range(3):
        bis.record_endpoint(run(n, 60.0))
    for i in sorted(skipped):  # e.g. they do not build
        bis.record_skip(i)
    steps = run_bisector(bis, run)
    assert not {s.index for s in steps} & skipped
    res = bis.result()
    # Commit 8 never ran, so "8 is the culprit" and "9 is" cannot be told apart.
    assert res.group == (8, 9) and res.ambiguous and res.confident
    assert set(res.credible_set) == {8, 9} and res.culprit in (8, 9)
    assert res.skips == 2 and res.probability < 0.95 <= res.group_probability


def test_same_observations_same_plan_and_replay_from_json() -> None:
    run = soak_oracle(13, 20.0, random.Random(9), mean=True)
    bis = FlakyBisector(30, 0.9, max_soak_s=60.0, min_soak_s=5.0, build_cost={5: 0.0})
    bis.record_endpoint(Soak(30, 12.0, True))
    bis.record_endpoint(Soak(0, 60.0, False))
    for _ in range(8):
        step = bis.next_step()
        assert step is not None
        bis.record(run(step.index, step.soak_seconds))
    bis.record_skip(21)
    state = json.loads(json.dumps(bis.to_dict()))
    again = FlakyBisector.from_dict(state, build_cost={5: 0.0})
    assert again.next_step() == bis.next_step()
    assert again.result() == bis.result()
    assert again.posterior.probabilities() == bis.posterior.probabilities()
    with pytest.raises(ValueError):
        FlakyBisector.from_dict({**state, "format": "other"})


def test_next_step_is_none_once_confident() -> None:
    bis = FlakyBisector(4, 0.95, max_soak_s=30.0, min_soak_s=3.0, calibration_hangs=0)
    for _ in range(50):
        bis.record_endpoint(Soak(4, 1.0, True))
    bis.record(Soak(3, 0.8, True))
    bis.record(Soak(2, 30.0, False))
    assert bis.done() and bis.next_step() is None
    assert bis.result().culprit == 3 and not bis.result().ambiguous
