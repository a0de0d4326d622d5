"""Honest numbers for "no hang": upper bounds, never a bare PASS.

With zero hangs in a soak of T seconds and an exponential time-to-hang, the hang rate is
below -ln(1-c)/T with confidence c (about 3/T at 95%, the "rule of three"). Over n
independent trials the per-trial hang probability is below 1-(1-c)^(1/n).
"""

from __future__ import annotations

import math


def rate_upper_bound(exposure_s: float, confidence: float = 0.95, hangs: int = 0) -> float:
    """Upper confidence bound on a Poisson rate given ``hangs`` events in ``exposure_s``."""
    if exposure_s <= 0:
        return math.inf
    return poisson_mean_bound(hangs, confidence, upper=True) / exposure_s


def rate_lower_bound(exposure_s: float, hangs: int, confidence: float = 0.95) -> float:
    """Lower confidence bound on a Poisson rate (0 when there were no events)."""
    if exposure_s <= 0 or hangs == 0:
        return 0.0
    return poisson_mean_bound(hangs, confidence, upper=False) / exposure_s


def trial_upper_bound(trials: int, confidence: float = 0.95) -> float:
    """Upper bound on the per-trial failure probability after ``trials`` clean trials."""
    return 1.0 if trials <= 0 else 1.0 - (1.0 - confidence) ** (1.0 / trials)


def _poisson_cdf(k: int, mean: float) -> float:
    """P(X <= k) for X ~ Poisson(mean)."""
    term = math.exp(-mean)
    total = term
    for i in range(1, k + 1):
        term *= mean / i
        total += term
    return min(1.0, total)


def poisson_mean_bound(events: int, confidence: float, *, upper: bool) -> float:
    """Exact (Garwood) one-sided bound on a Poisson mean, by bisection."""
    alpha = 1.0 - confidence
    if upper:
        # the mean m with P(X <= events | m) = alpha
        target = lambda m: _poisson_cdf(events, m) - alpha  # noqa: E731
    else:
        # the mean m with P(X >= events | m) = alpha
        target = lambda m: (1.0 - _poisson_cdf(events - 1, m)) - alpha  # noqa: E731
    low, high = 0.0, max(10.0, 10.0 * (events + 1))
    for _ in range(200):
        mid = (low + high) / 2
        value = target(mid)
        if (value > 0) == upper:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def soak_for_fix(
    baseline_hangs: int, baseline_exposure_s: float, confidence: float = 0.95
) -> float:
    """Soak length that would show, with ``confidence``, a hang if the patched build still
    hung at the baseline's rate. Uses the baseline rate's lower bound, so a lucky baseline
    cannot shorten the soak."""
    rate = rate_lower_bound(baseline_exposure_s, baseline_hangs, confidence)
    if rate <= 0:
        return math.inf
    return -math.log(1.0 - confidence) / rate


def describe_bound(hangs: int, exposure_s: float, trials: int, confidence: float = 0.95) -> str:
    """The sentence a PASS carries."""
    pct = round(confidence * 100)
    rate = rate_upper_bound(exposure_s, confidence)
    per_trial = trial_upper_bound(trials, confidence)
    return (
        f"{hangs} hangs in {exposure_s:.1f} s over {trials} trial(s); hang rate < {rate:.3g}/s "
        f"(mean time to hang > {1 / rate:.1f} s) and per-trial hang probability < "
        f"{per_trial:.2f} at {pct}%"
    )
