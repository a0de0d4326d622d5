"""Choose the next (commit, soak length) of a flaky bisection, and the driver around it.

For planning, a soak of length ``t`` at commit ``i`` has a binary outcome: hang within ``t`` or
not. Under hypothesis ``k`` (culprit ``k``)::

    P(hang within t | k) = 1 - (b_k / (b_k + t))^a_k    if i >= k   (λ ~ Gamma(a_k, b_k) given k)
                         = 1 - exp(-ε t)                 otherwise

where ``Gamma(a_k, b_k)`` is λ's exact posterior under ``k`` (``CulpritPosterior.rate_given``).
The expected information gain about ``k`` is the mutual information
``I = H(q) - Σ_k π_k H(p_k)`` with ``q = Σ_k π_k p_k`` (bits). Both sums are prefix sums over
``k``, so every candidate commit is scored in O(1) per soak length after an O(n) pass.

The planner maximises ``I / cost`` with ``cost = build + start-up overhead + E[soak seconds]``:
build is 0 for a commit already built, and the soak stops at the hang, so its expected length
is ``E[min(T_hang, t)]`` (for a bad commit ``∫_0^t (b/(b+u))^a du``). Soak lengths are searched
on a grid of multiples of the expected time to hang ``1/E[λ]`` (from the proven-bad commits),
clipped to ``[min_soak_s, max_soak_s]``, plus ``max_soak_s`` itself. With a fast race a soak
of several mean times-to-hang is ~1 bit, so it costs ~one soak per bisection step; with a rare
race the cheapest information is re-soaking built commits for long, which the cost model
prefers over building new ones.

Two additions to the greedy rule, both found to cut machine time in the simulations
(``benchmarks/bisect_simulation.py``):

* one-step look-ahead: a step whose outcome will not end the bisection is charged the least a
  follow-up costs (``overhead + min_soak``), so the deciding soak is made long enough to decide
  instead of being topped up by another short soak (``p_done_after``);
* calibration first (``FlakyBisector``): until proven-bad commits have hung a few times, soak
  the bad endpoint (already built); the myopic gain about ``k`` undervalues learning λ.

Several machines (``plan_with_pending``, a k-ary search):

With ``k`` machines the planner is asked for a step whenever a machine is free, and the
soaks already running on the others (``pending``) have not answered yet. The step chosen
maximises the information it adds *given* theirs, per second of the free machine::

    I(X; K | O) = Σ_o P(o) H(q_o) - Σ_k π_k H(p(k))

where ``O`` is the joint outcome (hang within its soak or not) of the pending soaks,
``q_o = P(X hangs | o)`` and ``p(k) = P(X hangs | culprit k)``. Outcomes are taken as
independent given ``k`` (each with λ's Lomax predictive under ``k``). ``O`` has at most
``2^(k-1)`` values, each a vector over the culprits, so a pass over the soak-length grid
costs ``O(2^(k-1) · n)`` per length: a few ms for k = 4 and n = 64.

With nothing pending it is exactly the one-machine plan; with pending soaks it spreads the
machines over the range instead of piling them on the best single split (a flat posterior
over 64 commits, 4 machines: commits 31, 20, 43, 14, a 5-ary search). Measured with
``benchmarks/bisect_simulation.py --scenario amplify-every-40 --machines 1 2 4 8 --runs 200``
(mean hang 2.6 s, 64 commits, a 10 s build per commit and machine, the endpoint checks
charged, ``verifier.bisect.dispatch``): wall time 1.00, 0.65, 0.44, 0.34 of one machine,
accuracy 1.0 for all. Scoring bits / cost^1.3 with pending soaks (shorter soaks) gave 0.43,
and the one-step look-ahead with pending soaks 0.48 (both 100 runs): neither kept. A machine
calibrates λ only if it has the bad end built (else other work is cheaper than the build).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from verifier.bisect.model import (
    DEFAULT_CALIBRATION_WEIGHT,
    DEFAULT_PRIOR_RATE,
    DEFAULT_PRIOR_SHAPE,
    CulpritPosterior,
    RateBelief,
    Soak,
)

DEFAULT_BUILD_S = 10.0  # cost of building a commit not built yet
DEFAULT_OVERHEAD_S = 2.0  # start-up of one soak (launch memcached, connect the load)
SOAK_MULTIPLES = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)  # × 1/E[λ]
DEFAULT_CALIBRATION_HANGS = 3  # hangs of proven-bad commits wanted before bisecting
MIN_GAIN_BITS = 1e-6  # below this no test is worth running
STATE_FORMAT = "flaky-bisector/1"

BuildCost = Callable[[int], float] | Mapping[int, float]


@dataclass(frozen=True)
class Step:
    """The next test: soak commit ``index`` for ``soak_seconds`` (stop early on a hang)."""

    index: int
    soak_seconds: float
    expected_gain_bits: float
    p_bad: float
    expected_cost_s: float = 0.0
    calibration: bool = False  # a soak of the bad endpoint to learn λ, not to split the range


@dataclass(frozen=True)
class Result:
    """Where the bisection stands. ``group`` lists culprits no test can tell apart (adjacent
    commits separated only by skipped ones); it is ``(culprit,)`` when nothing got in the way."""

    culprit: int
    probability: float
    credible_set: tuple[int, ...]
    group: tuple[int, ...]
    group_probability: float
    confident: bool  # group_probability >= confidence
    steps: int  # soaks recorded through record(), whatever the commit
    calibration_steps: int  # of which: calibration soaks of the bad endpoint (Step.calibration)
    skips: int
    soaks: int  # all soaks, record_endpoint() ones included
    endpoint_soaks: int  # soaks of index 0 or n, however recorded
    soak_seconds: float
    machine_seconds: float  # builds + start-up overheads + soak seconds, as the cost model sees it
    rate: RateBelief  # λ belief from the proven-bad commits

    @property
    def ambiguous(self) -> bool:
        return len(self.group) > 1


def binary_entropy(p: float) -> float:
    """H(p) in bits."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))


def soak_grid(mean_time_to_hang: float, min_soak_s: float, max_soak_s: float) -> list[float]:
    """Candidate soak lengths: multiples of the expected time to hang, within the bounds."""
    grid = {min(max(m * mean_time_to_hang, min_soak_s), max_soak_s) for m in SOAK_MULTIPLES}
    grid.add(max_soak_s)
    return sorted(grid)


def _expected_min(shape: float, rate: float, t: float) -> float:
    """E[min(T, t)] for T with Lomax survival (b/(b+u))^a: ∫_0^t (b/(b+u))^a du."""
    if abs(shape - 1.0) < 1e-9:
        return rate * math.log1p(t / rate)
    # b/(a-1) · (1 - (b/(b+t))^(a-1)), written to stay accurate for small t.
    return rate / (shape - 1.0) * -math.expm1(-(shape - 1.0) * math.log1p(t / rate))


def _hang_probs(posterior: CulpritPosterior, seconds: float) -> list[float]:
    """``P(hang within seconds | culprit k, commit bad)`` for every ``k`` (λ's Lomax predictive
    under ``k``); 0 where ``P(k) = 0``."""
    probs = posterior.probabilities()
    out = [0.0] * (posterior.n + 1)
    for k, (shape, rate) in enumerate(posterior.rates_by_hypothesis()):
        if k and probs[k] > 0:
            out[k] = -math.expm1(-shape * math.log1p(seconds / rate))
    return out


def gains_for_soak(
    posterior: CulpritPosterior, seconds: float
) -> tuple[list[float], list[float], list[float]]:
    """For every commit ``i`` in ``0..n``: expected information gain (bits) of a soak of
    ``seconds`` at ``i``, the expected soak seconds (stops at a hang), and ``P(bad)``."""
    n, eps = posterior.n, posterior.false_hang_rate
    probs = posterior.probabilities()
    rates = posterior.rates_by_hypothesis()
    p_hang = _hang_probs(posterior, seconds)
    p_eps = -math.expm1(-eps * seconds)  # P(false hang within t | good)
    h_eps = binary_entropy(p_eps)
    m_eps = p_eps / eps if eps > 0 else seconds  # E[min(T, t)] on a good commit
    gains, durations, p_bads = [0.0] * (n + 1), [m_eps] * (n + 1), [0.0] * (n + 1)
    s_mass = s_hang = s_cond_h = s_dur = 0.0
    for i in range(1, n + 1):
        pi = probs[i]
        if pi > 0:
            shape, rate = rates[i]
            p = p_hang[i]
            s_mass += pi
            s_hang += pi * p
            s_cond_h += pi * binary_entropy(p)
            s_dur += pi * _expected_min(shape, rate, seconds)
        # Commit i is bad under every k <= i: the prefix sums are exactly its mixture.
        p_good = max(0.0, 1.0 - s_mass)
        q = s_hang + p_good * p_eps
        gains[i] = max(0.0, binary_entropy(q) - s_cond_h - p_good * h_eps)
        durations[i] = s_dur + p_good * m_eps
        p_bads[i] = min(1.0, s_mass)
    return gains, durations, p_bads


def p_done_after(
    posterior: CulpritPosterior,
    index: int,
    seconds: float,
    confidence: float,
    *,
    groups: Sequence[Sequence[int]] | None = None,
    p_hang: Sequence[float] | None = None,
) -> float:
    """Probability that, after a soak of ``seconds`` at ``index``, some group of
    indistinguishable culprits holds ``confidence`` (binary outcome: hang within t or not)."""
    probs = posterior.probabilities()
    groups = posterior.groups() if groups is None else groups
    p_hang = _hang_probs(posterior, seconds) if p_hang is None else p_hang
    p_eps = -math.expm1(-posterior.false_hang_rate * seconds)
    # Joint mass of (group, outcome = hang) and (group, outcome = no hang).
    hang_mass, calm_mass = [], []
    for g in groups:
        h = c = 0.0
        for k in g:
            p = p_hang[k] if k <= index else p_eps
            h += probs[k] * p
            c += probs[k] * (1.0 - p)
        hang_mass.append(h)
        calm_mass.append(c)
    done = 0.0
    for masses in (hang_mass, calm_mass):
        total = math.fsum(masses)
        if total > 0 and max(masses) >= confidence * total:
            done += total
    return min(1.0, done)


def plan_next(
    posterior: CulpritPosterior,
    candidates: Iterable[int],
    *,
    build_cost: Callable[[int], float],
    overhead_s: float,
    min_soak_s: float,
    max_soak_s: float,
    confidence: float | None = None,
    min_gain_bits: float = MIN_GAIN_BITS,
) -> Step | None:
    """The (commit, soak length) with the highest expected bits per machine-second, or None
    when no candidate is expected to teach ``min_gain_bits``. ``build_cost(i)`` must be 0 for
    commits already built. Deterministic: ties go to the shorter soak, then the lower index.

    With ``confidence``, a one-step look-ahead charges every step the cost of the follow-up
    step it leaves necessary (at least ``overhead_s + min_soak_s``) unless its outcome ends
    the bisection: so the deciding soak is made long enough to decide, instead of being
    topped up by another short soak. It is evaluated for the most promising commits only.
    """
    cands = sorted(set(candidates))
    if not cands:
        return None
    grid = soak_grid(posterior.rate.mean_time_to_hang, min_soak_s, max_soak_s)
    builds = {i: build_cost(i) for i in cands}
    follow_up = overhead_s + min_soak_s if confidence is not None else 0.0
    # (score, step) for every (commit, soak length) worth anything; ordered grid-major.
    scored: list[tuple[float, Step]] = []
    by_t: dict[float, list[float]] = {}
    for t in grid:
        gains, durations, p_bads = gains_for_soak(posterior, t)
        by_t[t] = durations
        for i in cands:
            gain = gains[i]
            if gain < min_gain_bits:
                continue
            cost = builds[i] + overhead_s + durations[i]
            scored.append((gain / (cost + follow_up), Step(i, t, gain, p_bads[i], cost)))
    if not scored:
        return None
    if confidence is not None:
        scored = _look_ahead(posterior, scored, confidence, follow_up)
    best_score, best = scored[0]
    for score, step in scored[1:]:
        if score > best_score:
            best_score, best = score, step
    return best


def _look_ahead(
    posterior: CulpritPosterior,
    scored: list[tuple[float, Step]],
    confidence: float,
    follow_up: float,
    top_commits: int = 4,
) -> list[tuple[float, Step]]:
    """Re-score every soak length of the ``top_commits`` best commits with the follow-up cost
    weighted by the chance that the bisection is not done after it."""
    ranked = sorted(scored, key=lambda x: (-x[0], x[1].soak_seconds, x[1].index))
    top: list[int] = []
    for _, step in ranked:
        if step.index not in top:
            top.append(step.index)
            if len(top) == top_commits:
                break
    groups = posterior.groups()
    p_hang_by_t: dict[float, list[float]] = {}
    out = []
    for score, step in scored:
        if step.index in top:
            t = step.soak_seconds
            if t not in p_hang_by_t:
                p_hang_by_t[t] = _hang_probs(posterior, t)
            done = p_done_after(
                posterior, step.index, t, confidence, groups=groups, p_hang=p_hang_by_t[t]
            )
            score = step.expected_gain_bits / (step.expected_cost_s + (1.0 - done) * follow_up)
        out.append((score, step))
    return out


# -- several machines: plan a soak while others are still soaking --------------------------

MIN_PATTERN_MASS = 1e-9  # joint outcomes of the pending soaks less likely than this are dropped


def _outcome_patterns(posterior: CulpritPosterior, pending: Sequence[Step]) -> list[list[float]]:
    """For each joint outcome ``o`` of the pending soaks: ``π_k · P(o | k)`` for every ``k``."""
    eps = posterior.false_hang_rate
    patterns = [posterior.probabilities()]
    for step in pending:
        p_bad = _hang_probs(posterior, step.soak_seconds)
        p_eps = -math.expm1(-eps * step.soak_seconds)
        hang_p = [p_bad[k] if step.index >= k else p_eps for k in range(posterior.n + 1)]
        split: list[list[float]] = []
        for weights in patterns:
            hung = [w * p for w, p in zip(weights, hang_p, strict=True)]
            calm = [w * (1.0 - p) for w, p in zip(weights, hang_p, strict=True)]
            split += [v for v in (hung, calm) if math.fsum(v) > MIN_PATTERN_MASS]
        patterns = split
    return patterns


def conditional_gains(
    posterior: CulpritPosterior, seconds: float, patterns: Sequence[Sequence[float]]
) -> list[float]:
    """``I(X_i; K | O)`` in bits for a soak of ``seconds`` at every commit ``i`` in ``0..n``."""
    n, eps = posterior.n, posterior.false_hang_rate
    probs = posterior.probabilities()
    p_hang = _hang_probs(posterior, seconds)
    p_eps = -math.expm1(-eps * seconds)
    h_eps = binary_entropy(p_eps)
    # Σ_k π_k H(p_i(k)): prefix over the culprits that make commit i bad, the rest good.
    cond = [0.0] * (n + 1)
    mass = acc = 0.0
    for i in range(1, n + 1):
        mass += probs[i]
        acc += probs[i] * binary_entropy(p_hang[i])
        cond[i] = acc + max(0.0, 1.0 - mass) * h_eps
    cond[0] = h_eps
    marginal = [0.0] * (n + 1)  # Σ_o P(o) H(q_o,i)
    for weights in patterns:
        total = math.fsum(weights)
        bad_hang = bad_mass = 0.0
        for i in range(n + 1):
            if i:
                bad_hang += weights[i] * p_hang[i]
                bad_mass += weights[i]
            q = (bad_hang + max(0.0, total - bad_mass) * p_eps) / total
            marginal[i] += total * binary_entropy(q)
    return [max(0.0, m - c) for m, c in zip(marginal, cond, strict=True)]


def plan_with_pending(
    posterior: CulpritPosterior,
    candidates: Iterable[int],
    pending: Sequence[Step],
    *,
    build_cost: Callable[[int], float],
    overhead_s: float,
    min_soak_s: float,
    max_soak_s: float,
    min_gain_bits: float = MIN_GAIN_BITS,
) -> Step | None:
    """The (commit, soak length) with the most bits, given the ``pending`` soaks' outcomes,
    per second of the free machine (``build_cost(i)`` is 0 where it has built ``i``); None
    when nothing is expected to teach ``min_gain_bits``. Ties: shorter soak, lower index."""
    cands = sorted(set(candidates))
    if not cands:
        return None
    patterns = _outcome_patterns(posterior, pending)
    builds = {i: build_cost(i) for i in cands}  # a cache lookup each: once per commit
    best: tuple[float, Step] | None = None
    for t in soak_grid(posterior.rate.mean_time_to_hang, min_soak_s, max_soak_s):
        gains = conditional_gains(posterior, t, patterns)
        _, durations, p_bads = gains_for_soak(posterior, t)
        for i in cands:
            if gains[i] < min_gain_bits:
                continue
            cost = builds[i] + overhead_s + durations[i]
            score = gains[i] / cost
            if best is None or score > best[0]:
                best = (score, Step(i, t, gains[i], p_bads[i], cost))
    return None if best is None else best[1]


class _EventKind(enum.StrEnum):
    ENDPOINT = "endpoint"
    SOAK = "soak"
    SKIP = "skip"


@dataclass
class _Event:
    kind: _EventKind
    index: int
    seconds: float = 0.0
    hung: bool = False


@dataclass
class _Config:
    max_soak_s: float
    min_soak_s: float = 1.0
    overhead_s: float = DEFAULT_OVERHEAD_S
    default_build_s: float = DEFAULT_BUILD_S
    prior_shape: float = DEFAULT_PRIOR_SHAPE
    prior_rate: float = DEFAULT_PRIOR_RATE
    false_hang_rate: float = 0.0
    prior_weights: list[float] | None = None
    calibration_weight: float = DEFAULT_CALIBRATION_WEIGHT
    calibration_hangs: int = DEFAULT_CALIBRATION_HANGS
    max_steps: int | None = None


class FlakyBisector:
    """Driver for the real bisector: ask ``next_step()``, run it, ``record()`` the soak.

    Index 0 is the good endpoint, ``n`` the bad one (reverse the list for a fix search). Feed
    the runs that confirmed the endpoints to ``record_endpoint``: hangs of the bad endpoint
    calibrate λ. Until the proven-bad commits have hung ``calibration_hangs`` times in all,
    ``next_step`` first asks for more soaks of the bad endpoint (``Step.calibration``; at most
    ``3 × calibration_hangs`` of them): knowing λ early makes every later no-hang soak count,
    and the greedy information planner alone undervalues it (it lowered the machine time of
    every simulated scenario). ``build_cost``: seconds to build commit ``i`` (callable or
    mapping, default ``default_build_s``); commits already soaked or skipped, and both
    endpoints, count as built. The state is the list of events: ``to_dict``/``from_dict``
    replay it, and the same events always give the same next step.
    """

    def __init__(
        self,
        n: int,
        confidence: float = 0.95,
        *,
        max_soak_s: float,
        min_soak_s: float = 1.0,
        build_cost: BuildCost | None = None,
        overhead_s: float = DEFAULT_OVERHEAD_S,
        default_build_s: float = DEFAULT_BUILD_S,
        prior_shape: float = DEFAULT_PRIOR_SHAPE,
        prior_rate: float = DEFAULT_PRIOR_RATE,
        false_hang_rate: float = 0.0,
        prior_weights: Sequence[float] | None = None,
        calibration_weight: float = DEFAULT_CALIBRATION_WEIGHT,
        calibration_hangs: int = DEFAULT_CALIBRATION_HANGS,
        max_steps: int | None = None,
    ) -> None:
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if not 0 < min_soak_s <= max_soak_s:
            raise ValueError(f"need 0 < min_soak_s <= max_soak_s, got {min_soak_s}, {max_soak_s}")
        if overhead_s < 0 or default_build_s < 0 or calibration_hangs < 0:
            raise ValueError("costs and calibration_hangs must be >= 0")
        self.n = n
        self.confidence = confidence
        self.config = _Config(
            max_soak_s=max_soak_s,
            min_soak_s=min_soak_s,
            overhead_s=overhead_s,
            default_build_s=default_build_s,
            prior_shape=prior_shape,
            prior_rate=prior_rate,
            false_hang_rate=false_hang_rate,
            prior_weights=list(prior_weights) if prior_weights is not None else None,
            calibration_weight=calibration_weight,
            calibration_hangs=calibration_hangs,
            max_steps=max_steps,
        )
        self.posterior = CulpritPosterior(
            n,
            prior_shape=prior_shape,
            prior_rate=prior_rate,
            false_hang_rate=false_hang_rate,
            prior_weights=prior_weights,
            calibration_weight=calibration_weight,
        )
        self._build_cost_arg = build_cost
        self._built: set[int] = {0, n}
        self._events: list[_Event] = []
        self._steps = 0
        self._calibration_asked = 0
        self._machine_s = 0.0

    # -- costs ----------------------------------------------------------------------------------

    def _raw_build_cost(self, index: int) -> float:
        bc = self._build_cost_arg
        if bc is None:
            return self.config.default_build_s
        if isinstance(bc, Mapping):
            return float(bc.get(index, self.config.default_build_s))
        return float(bc(index))

    def build_cost(self, index: int) -> float:
        """Seconds to build ``index`` now: 0 if it is already built."""
        return 0.0 if index in self._built else self._raw_build_cost(index)

    # -- observations ---------------------------------------------------------------------------

    def record_endpoint(self, soak: Soak) -> None:
        """A soak on index 0 or ``n`` (the bad endpoint is always bad; its hangs calibrate λ)."""
        if soak.index not in (0, self.n):
            raise ValueError(f"endpoint soaks are on 0 or {self.n}, got {soak.index}")
        self.posterior.observe(soak)
        self._machine_s += self.config.overhead_s + soak.seconds
        self._events.append(_Event(_EventKind.ENDPOINT, soak.index, soak.seconds, soak.hung))

    def record(self, soak: Soak) -> None:
        """The outcome of a soak (normally the one ``next_step`` asked for; any commit works,
        and a hang that ends the soak early is recorded with the seconds until the hang)."""
        calibrating = soak.index == self.n and self._calibrating()
        self.posterior.observe(soak)
        self._machine_s += self.build_cost(soak.index) + self.config.overhead_s + soak.seconds
        self._built.add(soak.index)
        self._steps += 1
        self._calibration_asked += calibrating
        self._events.append(_Event(_EventKind.SOAK, soak.index, soak.seconds, soak.hung))

    def record_skip(self, index: int) -> None:
        """Commit ``index`` cannot be tested (build failure, not applicable, another bug)."""
        self.posterior.skip(index)
        self._machine_s += self.build_cost(index)
        self._built.add(index)
        self._events.append(_Event(_EventKind.SKIP, index))

    @property
    def events(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self._events]

    # -- planning -------------------------------------------------------------------------------

    def candidates(self) -> list[int]:
        """Commits the planner may choose: ``1..n`` minus the skipped ones (0 teaches nothing)."""
        skipped = self.posterior.skipped
        return [i for i in range(1, self.n + 1) if i not in skipped]

    def done(self) -> bool:
        return self.posterior.done(self.confidence)

    def _calibrating(self, pending_calibrations: int = 0) -> bool:
        post = self.posterior
        proven_hangs = sum(post.hangs(i) for i in range(1, self.n + 1))
        return (
            proven_hangs + pending_calibrations < self.config.calibration_hangs
            and self._calibration_asked + pending_calibrations < 3 * self.config.calibration_hangs
        )

    def next_step(
        self, pending: Sequence[Step] = (), built: Collection[int] | None = None
    ) -> Step | None:
        """The next soak to run, or None when confident, out of steps, or nothing informative
        is left to test (e.g. the remaining doubt lies between skipped commits).

        On a cluster: ``pending`` are the steps other machines are soaking (asked for, not
        recorded yet), and ``built`` the commits the free machine has built (default: every
        commit soaked anywhere, and the endpoints)."""
        if self.done():
            return None
        if (
            self.config.max_steps is not None
            and self._steps + len(pending) >= self.config.max_steps
        ):
            return None
        build_cost = self.build_cost
        if built is not None:
            mine = frozenset(built)

            def build_cost(index: int) -> float:
                return 0.0 if index in mine else self._raw_build_cost(index)

        has_bad_end = built is None or self.n in built  # else calibrating costs a build
        if has_bad_end and self._calibrating(sum(1 for s in pending if s.calibration)):
            t = self.config.max_soak_s
            gains, durations, _ = gains_for_soak(self.posterior, t)
            cost = build_cost(self.n) + self.config.overhead_s + durations[self.n]
            return Step(self.n, t, gains[self.n], 1.0, cost, calibration=True)
        if pending:
            return plan_with_pending(
                self.posterior,
                self.candidates(),
                pending,
                build_cost=build_cost,
                overhead_s=self.config.overhead_s,
                min_soak_s=self.config.min_soak_s,
                max_soak_s=self.config.max_soak_s,
            )
        return plan_next(
            self.posterior,
            self.candidates(),
            build_cost=build_cost,
            overhead_s=self.config.overhead_s,
            min_soak_s=self.config.min_soak_s,
            max_soak_s=self.config.max_soak_s,
            confidence=self.confidence,
        )

    def result(self) -> Result:
        post = self.posterior
        culprit, prob = post.best()
        group, group_mass = post.best_group()
        soaks = post.soaks
        return Result(
            culprit=culprit,
            probability=prob,
            credible_set=tuple(post.credible_set(self.confidence)),
            group=tuple(group),
            group_probability=group_mass,
            confident=group_mass >= self.confidence,
            steps=self._steps,
            calibration_steps=self._calibration_asked,
            skips=len(post.skipped),
            soaks=len(soaks),
            endpoint_soaks=sum(1 for s in soaks if s.index in (0, self.n)),
            soak_seconds=math.fsum(s.seconds for s in soaks),
            machine_seconds=self._machine_s,
            rate=post.rate,
        )

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the configuration and the events, in order."""
        return {
            "format": STATE_FORMAT,
            "n": self.n,
            "confidence": self.confidence,
            "config": asdict(self.config),
            "events": self.events,
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, build_cost: BuildCost | None = None
    ) -> FlakyBisector:
        """Rebuild by replaying the events (the build-cost function is not serialised)."""
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown bisector state format {data.get('format')!r}")
        bis = cls(
            int(data["n"]), float(data["confidence"]), build_cost=build_cost, **data["config"]
        )
        for ev in data["events"]:
            kind, index = _EventKind(ev["kind"]), int(ev["index"])
            if kind == _EventKind.SKIP:
                bis.record_skip(index)
                continue
            soak = Soak(index, float(ev["seconds"]), bool(ev["hung"]))
            if kind == _EventKind.ENDPOINT:
                bis.record_endpoint(soak)
            else:
                bis.record(soak)
        return bis
