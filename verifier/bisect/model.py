"""Posterior over the culprit commit of a flaky hang, from censored soak observations.

Setting
-------
Commits are indexed ``0..n``: index 0 is the endpoint known *not* to hang ("good"), index ``n``
the endpoint known to hang ("bad"); for a fix search the caller reverses the list. Hypothesis
``k`` (``1 <= k <= n``) says commits ``>= k`` are bad and commits ``< k`` good, so ``k`` is the
first bad commit (the culprit). ``probabilities()`` is indexed by position ``0..n`` with
``P(k = 0) = 0`` by construction.

Observation model
-----------------
A *soak* of a commit runs it for ``t`` seconds: either no hang ("survived t", right-censored) or
a hang after ``t`` seconds. Times to hang are exponential: rate ``λ`` on bad commits, rate
``ε = false_hang_rate`` on good commits (default 0: a hang's bug key is checked elsewhere,
so a hang proves badness; ``ε > 0`` keeps a misclassified hang from being fatal). Because the
exponential is memoryless, the likelihood of all soaks on commit ``i`` depends only on its hang
count ``h_i`` and total exposure ``E_i`` (seconds survived plus seconds until each hang):
``λ^h_i · exp(-λ E_i)`` if bad, ``ε^h_i · exp(-ε E_i)`` if good.

λ is unknown and shared by the bad commits, with a Gamma(shape ``a0``, rate ``b0``) prior.
Under hypothesis ``k`` the bad commits are ``k..n``; with ``H_k = Σ_{i>=k} w_i h_i`` and
``E_k = Σ_{i>=k} w_i E_i`` λ integrates out in closed form::

    P(data | k) ∝ Γ(a0 + H_k) / (b0 + E_k)^(a0 + H_k) · Π_{i<k} (ε^h_i e^(-ε E_i))^w_i

computed for every ``k`` in O(n) from suffix sums, in log space. With all weights ``w_i = 1``
this is the exact marginal likelihood of the model (no plug-in λ). When ``ε = 0`` it is
precisely the recipe "posterior of λ from the proven-bad commits (those that hung, and ``n``),
then the Lomax predictive ``(b/(b+T))^a`` of the no-hang exposure ``T`` that hypothesis ``k``
additionally calls bad": every hypothesis still alive (``k <= min hung index``) contains all
hung commits, so their factor is the same for all ``k``. Why this is conservative:

* λ's uncertainty is integrated out, so the survival factor ``(b/(b+T))^a`` is heavier-tailed
  than ``exp(-E[λ] T)`` and a short soak with an uncertain λ counts for little;
* no-hang exposure on hypothetically bad commits is pooled into one Lomax term (λ is shared)
  rather than a product of per-commit Lomax terms, which would over-count the evidence
  (``E[e^{-λ(T1+T2)}] >= E[e^{-λT1}]·E[e^{-λT2}]``); it also lowers λ under hypotheses that
  call many surviving commits bad, as it should.

Deliberate approximation (``calibration_weight`` ρ, default 0.5): the soaks of proven-bad
commits get weight ``w_i = ρ`` (the others 1). Those commits are bad under every hypothesis
still alive (if ``ε = 0``), so this changes only λ's posterior: about the same mean, ``1/ρ``
times the variance,
i.e. "each observed hang counts as half a hang". It stands for what the model leaves out --
λ differs between commits and runs (the bad endpoint may hang more readily than the culprit)
-- and it is what makes the stopping rule hold its promise: in the rare-race simulations with
ρ = 1 a posterior of 0.95 was right only ~93-97 % of the time (λ estimated from 2-5 hangs is
often too high by chance, which over-trusts no-hang soaks), with ρ = 0.5 ~99 %. Evidence about
``k`` itself (no-hang soaks on commits not proven bad) keeps full weight, so it does not
slow a fast, reproducible race much. The prior defaults (``a0 = 0.1`` pseudo-hangs,
``b0 = 1`` s) are close to the scale-free ``1/λ`` prior, so the first few hangs set the scale;
a larger ``a0`` drags λ towards 1/s, i.e. over-trusts soaks of a slow race.

Skipped commits (no build, scenario not applicable, another bug's hang) carry no
information: the posterior stays over all positions, and hypotheses that differ only by
untested skipped commits are indistinguishable -- ``groups()`` / ``best_group()`` expose that
("the culprit is one of these adjacent commits").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_PRIOR_SHAPE = 0.1  # pseudo-hangs
DEFAULT_PRIOR_RATE = 1.0  # pseudo-exposure, seconds
DEFAULT_CALIBRATION_WEIGHT = 0.5  # weight of the soaks on proven-bad commits

_NEG_INF = -math.inf


@dataclass(frozen=True)
class Soak:
    """One observation: commit ``index`` ran ``seconds`` and hung at the end (``hung``) or not."""

    index: int
    seconds: float
    hung: bool

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"soak index must be >= 0, got {self.index}")
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"soak seconds must be finite and >= 0, got {self.seconds}")


@dataclass(frozen=True)
class RateBelief:
    """Gamma(shape, rate) belief over the hang rate λ (per second) of a bad commit."""

    shape: float
    rate: float

    def __post_init__(self) -> None:
        if not (self.shape > 0 and self.rate > 0):
            raise ValueError(f"Gamma shape and rate must be > 0, got {self.shape}, {self.rate}")

    @property
    def mean(self) -> float:
        """E[λ] (hangs per second)."""
        return self.shape / self.rate

    @property
    def mean_time_to_hang(self) -> float:
        """1 / E[λ] in seconds (E[1/λ] is infinite for shape <= 1, so use this scale)."""
        return self.rate / self.shape

    def updated(self, hangs: float, exposure_s: float) -> RateBelief:
        """Conjugate update with ``hangs`` hangs seen over ``exposure_s`` seconds."""
        return RateBelief(self.shape + hangs, self.rate + exposure_s)

    def log_p_no_hang(self, seconds: float) -> float:
        """log E_λ[exp(-λ t)] = -a·log(1 + t/b): the Lomax survival function, λ integrated out."""
        return -self.shape * math.log1p(seconds / self.rate)

    def p_no_hang(self, seconds: float) -> float:
        return math.exp(self.log_p_no_hang(seconds))

    def p_hang_within(self, seconds: float) -> float:
        return -math.expm1(self.log_p_no_hang(seconds))


class CulpritPosterior:
    """Posterior over the culprit position ``k`` in ``1..n`` (see module docstring).

    ``prior_weights``: ``n`` weights for ``k = 1..n``, or ``n + 1`` weights indexed like
    ``probabilities()`` (the weight of position 0 must then be 0). Uniform if omitted.
    """

    def __init__(
        self,
        n: int,
        *,
        prior_shape: float = DEFAULT_PRIOR_SHAPE,
        prior_rate: float = DEFAULT_PRIOR_RATE,
        false_hang_rate: float = 0.0,
        prior_weights: Sequence[float] | None = None,
        calibration_weight: float = DEFAULT_CALIBRATION_WEIGHT,
    ) -> None:
        if n < 1:
            raise ValueError(f"need at least one commit after the good endpoint, got n={n}")
        if not (math.isfinite(false_hang_rate) and false_hang_rate >= 0):
            raise ValueError(f"false_hang_rate must be finite and >= 0, got {false_hang_rate}")
        if not 0 < calibration_weight <= 1:
            raise ValueError(f"calibration_weight must be in (0, 1], got {calibration_weight}")
        self.n = n
        self.calibration_weight = calibration_weight
        self.prior = RateBelief(prior_shape, prior_rate)
        self.false_hang_rate = false_hang_rate
        self.prior_weights = self._normalise_weights(n, prior_weights)
        self._log_prior = [_NEG_INF] + [
            math.log(w) if w > 0 else _NEG_INF for w in self.prior_weights[1:]
        ]
        self._hangs = [0] * (n + 1)  # h_i
        self._exposure = [0.0] * (n + 1)  # E_i, seconds
        self._soaks: list[Soak] = []
        self._skipped: set[int] = set()
        self._probs: list[float] = []
        self._cum: list[float] = []  # _cum[i] = P(k <= i) = P(commit i is bad)
        self._shape_k: list[float] = []
        self._rate_k: list[float] = []
        self._recompute()

    @staticmethod
    def _normalise_weights(n: int, weights: Sequence[float] | None) -> list[float]:
        if weights is None:
            return [0.0] + [1.0 / n] * n
        w = [float(x) for x in weights]
        if len(w) == n:
            w = [0.0, *w]
        elif len(w) != n + 1:
            raise ValueError(f"prior_weights needs {n} or {n + 1} entries, got {len(w)}")
        if w[0] != 0:
            raise ValueError("position 0 is the good endpoint: its prior weight must be 0")
        if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
            raise ValueError("prior_weights must be finite, >= 0 and not all 0")
        total = sum(w)
        return [x / total for x in w]

    # -- observations -------------------------------------------------------------------------

    def observe(self, soak: Soak) -> None:
        """Add one soak; several soaks on the same commit accumulate (hangs and exposure)."""
        self._check_index(soak.index)
        if soak.hung and soak.index == 0 and self.false_hang_rate == 0:
            raise ValueError(
                "the good endpoint hung: the range is wrong, or set false_hang_rate > 0"
            )
        self._hangs[soak.index] += int(soak.hung)
        self._exposure[soak.index] += soak.seconds
        self._soaks.append(soak)
        try:
            self._recompute()
        except ValueError:
            # Roll back so that the object stays usable.
            self._hangs[soak.index] -= int(soak.hung)
            self._exposure[soak.index] -= soak.seconds
            self._soaks.pop()
            self._recompute()
            raise

    def skip(self, index: int) -> None:
        """Mark a commit as untestable. It carries no information; the posterior is unchanged."""
        self._check_index(index)
        if index in (0, self.n):
            raise ValueError("the endpoints cannot be skipped")
        self._skipped.add(index)

    def _check_index(self, index: int) -> None:
        if not 0 <= index <= self.n:
            raise ValueError(f"commit index {index} outside 0..{self.n}")

    @property
    def soaks(self) -> tuple[Soak, ...]:
        return tuple(self._soaks)

    @property
    def skipped(self) -> frozenset[int]:
        return frozenset(self._skipped)

    def hangs(self, index: int) -> int:
        return self._hangs[index]

    def exposure(self, index: int) -> float:
        return self._exposure[index]

    def observed(self, index: int) -> bool:
        return self._exposure[index] > 0 or self._hangs[index] > 0

    # -- the posterior ------------------------------------------------------------------------

    def _recompute(self) -> None:
        n, a0, b0, eps = self.n, self.prior.shape, self.prior.rate, self.false_hang_rate
        w = self._weights()
        # Suffix sums: the Gamma posterior of λ under hypothesis k (bad commits k..n).
        shape_k = [a0] * (n + 1)
        rate_k = [b0] * (n + 1)
        hangs, exposure = 0.0, 0.0
        for k in range(n, 0, -1):
            hangs += w[k] * self._hangs[k]
            exposure += w[k] * self._exposure[k]
            shape_k[k] = a0 + hangs
            rate_k[k] = b0 + exposure
        # Prefix sums of the good-commit log-likelihood Σ_{i<k} w_i (h_i log ε - ε E_i).
        log_eps = math.log(eps) if eps > 0 else _NEG_INF
        good_ll = 0.0
        logs = [_NEG_INF] * (n + 1)
        for k in range(1, n + 1):
            i = k - 1
            if self._hangs[i]:
                good_ll += w[i] * self._hangs[i] * log_eps  # -inf if ε = 0: a hang proves badness
            good_ll -= w[i] * eps * self._exposure[i]
            if good_ll == _NEG_INF or self._log_prior[k] == _NEG_INF:
                continue
            # log Γ(a0+H_k) - (a0+H_k) log(b0+E_k); the k-independent normaliser is dropped.
            logs[k] = (
                self._log_prior[k]
                + math.lgamma(shape_k[k])
                - shape_k[k] * math.log(rate_k[k])
                + good_ll
            )
        top = max(logs)
        if top == _NEG_INF:
            raise ValueError("observations contradict every hypothesis (false_hang_rate is 0)")
        weights = [math.exp(x - top) if x != _NEG_INF else 0.0 for x in logs]
        total = math.fsum(weights)
        self._probs = [w / total for w in weights]
        cum, acc = [], 0.0
        for p in self._probs:
            acc += p
            cum.append(min(acc, 1.0))
        cum[-1] = 1.0
        self._cum = cum
        self._shape_k, self._rate_k = shape_k, rate_k

    def _weights(self) -> list[float]:
        """Likelihood weight of each commit's soaks: ``calibration_weight`` on the proven-bad
        commits (``n`` and every commit that hung), 1 elsewhere (see the module docstring)."""
        rho = self.calibration_weight
        return [rho if (i == self.n or h > 0) else 1.0 for i, h in enumerate(self._hangs)]

    def probabilities(self) -> list[float]:
        """``P(culprit = k)`` for positions ``k = 0..n`` (position 0 is always 0)."""
        return list(self._probs)

    def p_bad(self, index: int) -> float:
        """``P(commit index is bad) = Σ_{k <= index} P(k)``."""
        self._check_index(index)
        return self._cum[index]

    def best(self) -> tuple[int, float]:
        """The most probable culprit (lowest index on ties) and its probability."""
        k = max(range(1, self.n + 1), key=lambda j: (self._probs[j], -j))
        return k, self._probs[k]

    def credible_set(self, mass: float) -> list[int]:
        """Smallest set of positions (ascending) whose probability reaches ``mass``."""
        if not 0 < mass <= 1:
            raise ValueError(f"mass must be in (0, 1], got {mass}")
        order = sorted(range(1, self.n + 1), key=lambda j: (-self._probs[j], j))
        chosen, acc = [], 0.0
        for k in order:
            if acc >= mass - 1e-12 or self._probs[k] == 0:
                break
            chosen.append(k)
            acc += self._probs[k]
        return sorted(chosen)

    def groups(self) -> list[list[int]]:
        """Hypotheses no test can tell apart: ``k-1`` and ``k`` differ only in commit ``k-1``,
        so they merge when that commit is skipped and has no observation."""
        out: list[list[int]] = [[1]]
        for k in range(2, self.n + 1):
            if (k - 1) in self._skipped and not self.observed(k - 1):
                out[-1].append(k)
            else:
                out.append([k])
        return out

    def best_group(self) -> tuple[list[int], float]:
        """The most probable group of indistinguishable culprits and its total probability."""
        scored = [(math.fsum(self._probs[k] for k in g), g) for g in self.groups()]
        mass, group = max(scored, key=lambda x: (x[0], -x[1][0]))
        return group, mass

    def done(self, confidence: float) -> bool:
        """True once the best group (a single commit when nothing relevant was skipped)
        holds at least ``confidence`` of the probability."""
        return self.best_group()[1] >= confidence

    # -- λ -----------------------------------------------------------------------------------

    @property
    def rate(self) -> RateBelief:
        """Belief on λ from the proven-bad commits only (index ``n`` and every commit that
        hung): a k-independent summary used for scale (soak-length grid, reporting)."""
        rho = self.calibration_weight
        hangs = exposure = 0.0
        for i in range(1, self.n + 1):
            if i == self.n or self._hangs[i]:
                hangs += rho * self._hangs[i]
                exposure += rho * self._exposure[i]
        return self.prior.updated(hangs, exposure)

    def rate_given(self, k: int) -> RateBelief:
        """Exact belief on λ under hypothesis ``k`` (all soaks on commits ``>= k``)."""
        if not 1 <= k <= self.n:
            raise ValueError(f"hypothesis {k} outside 1..{self.n}")
        return RateBelief(self._shape_k[k], self._rate_k[k])

    def rates_by_hypothesis(self) -> list[tuple[float, float]]:
        """(shape, rate) of λ's posterior for each position ``0..n`` (position 0: the prior)."""
        return list(zip(self._shape_k, self._rate_k, strict=True))
