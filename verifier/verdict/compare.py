"""A patch set's verdict is a comparison: how the build without it behaved, how it behaves.

"as-shipped hung 1/1 at 1.2 s; with-fix: 0 hangs in 60 s, rate < 0.05/s at 95%" says more
than two verdicts side by side. Whether the candidate's clean soak is long enough to call
it fixed is the same question as ``verify --baseline`` asks: would the reference's rate
(its lower bound, so a lucky reference cannot shorten the soak) have shown a hang in that
time with the given confidence? With a reference that hung once in 1.2 s, that takes 70 s
at 95%; a 4 s soak is a good sign, not a proof, and the sentence says so.

Pure: summaries in, a kind and a sentence out. Used by ``verifier matrix`` (one sentence
per patch set and scenario against the reference patch set) and by ``verify --baseline``.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from verifier.records.trial import TrialResult
from verifier.verdict.stats import rate_upper_bound, soak_for_fix
from verifier.verdict.verdict import exposure_s, is_other_bug
from verifier.vocabulary import HangClass, TrialOutcome


class ComparisonKind(enum.StrEnum):
    FIXED = "fixed"  # the reference hung; the candidate soaked clean long enough to show it
    NOT_SHOWN = "not shown"  # the reference hung; the candidate is clean, but too briefly
    STILL_HANGS = "still hangs"  # both hung
    REGRESSION = "regression"  # the reference was clean, the candidate hung
    BOTH_CLEAN = "both clean"  # neither hung: nothing to compare against
    UNDECIDED = "undecided"  # one side has no verdict (inconclusive, n/a, error)


@dataclass(frozen=True)
class SoakSummary:
    """What one build's soaks of one scenario showed about the scenario's bug."""

    label: str  # how the sentence names it ("as-shipped", "unpatched")
    trials: int
    hangs: int  # trials that hung with this bug (another bug's hang is not counted)
    crashes: int
    times_to_hang_s: tuple[float, ...]
    exposure_s: float  # seconds of flood without this bug's hang
    exercised: bool = True  # False: no verdict (inconclusive, not applicable, error)

    @property
    def failed(self) -> int:
        return self.hangs + self.crashes


def summarize(
    label: str,
    trials: Iterable[TrialResult],
    hunted: HangClass | None,
    *,
    exercised: bool = True,
    set_aside: frozenset[HangClass] = frozenset(),
) -> SoakSummary:
    """A summary of trial results, about the hunted bug (another bug's hang not counted)."""
    items = list(trials)
    mine = [t for t in items if not is_other_bug(t, hunted, set_aside)]
    hangs = [t for t in mine if t.outcome == TrialOutcome.HANG]
    return SoakSummary(
        label=label,
        trials=len(items),
        hangs=len(hangs),
        crashes=sum(1 for t in mine if t.outcome == TrialOutcome.CRASH),
        times_to_hang_s=tuple(
            float(t.time_to_hang_s) for t in hangs if t.time_to_hang_s is not None
        ),
        exposure_s=sum(exposure_s(t) for t in items),
        exercised=exercised,
    )


@dataclass(frozen=True)
class Comparison:
    kind: ComparisonKind
    sentence: str
    reference: str
    candidate: str
    required_soak_s: float | None = None  # clean soak that would show the fix (None: n/a)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "sentence": self.sentence,
            "reference": self.reference,
            "candidate": self.candidate,
            "required_soak_s": self.required_soak_s,
        }


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def _failed_phrase(summary: SoakSummary) -> str:
    """'hung 3/3 at 1.1 s' (median time to hang when several), 'crashed 1/2'."""
    parts = []
    if summary.hangs:
        text = f"hung {summary.hangs}/{summary.trials}"
        if summary.times_to_hang_s:
            median = statistics.median(summary.times_to_hang_s)
            text += f" at {_seconds(median)}" + (
                " (median)" if len(summary.times_to_hang_s) > 1 else ""
            )
        parts.append(text)
    if summary.crashes:
        parts.append(f"crashed {summary.crashes}/{summary.trials}")
    return " and ".join(parts)


def _clean_phrase(summary: SoakSummary, confidence: float) -> str:
    rate = rate_upper_bound(summary.exposure_s, confidence)
    return (
        f"0 hangs in {_seconds(summary.exposure_s)}, rate < {rate:.2g}/s "
        f"at {round(confidence * 100)}%"
    )


def compare(reference: SoakSummary, candidate: SoakSummary, confidence: float = 0.95) -> Comparison:
    """The comparison of ``candidate`` against ``reference`` (same scenario and source)."""
    ref, cand = reference.label, candidate.label

    def make(kind: ComparisonKind, sentence: str, required: float | None = None) -> Comparison:
        return Comparison(kind, sentence, ref, cand, required)

    if not reference.exercised or not candidate.exercised:
        silent = [s.label for s in (reference, candidate) if not s.exercised]
        return make(
            ComparisonKind.UNDECIDED,
            f"{ref} vs {cand}: no comparison ({' and '.join(silent)} gave no verdict)",
        )
    if reference.failed and candidate.failed:
        return make(
            ComparisonKind.STILL_HANGS,
            f"{ref} {_failed_phrase(reference)}; {cand} still {_failed_phrase(candidate)}",
        )
    if candidate.failed:
        return make(
            ComparisonKind.REGRESSION,
            f"{ref}: {_clean_phrase(reference, confidence)}; {cand} "
            f"{_failed_phrase(candidate)} (a regression)",
        )
    if not reference.failed:
        return make(
            ComparisonKind.BOTH_CLEAN,
            f"neither hung: {ref} {_clean_phrase(reference, confidence)}; "
            f"{cand} {_clean_phrase(candidate, confidence)}",
        )
    required = soak_for_fix(reference.failed, reference.exposure_s, confidence)
    sentence = f"{ref} {_failed_phrase(reference)}; {cand}: {_clean_phrase(candidate, confidence)}"
    if candidate.exposure_s >= required:
        return make(ComparisonKind.FIXED, sentence, required)
    return make(
        ComparisonKind.NOT_SHOWN,
        f"{sentence}; not yet shown fixed: ruling out {ref}'s rate takes "
        f"{_seconds(required)} of clean flood",
        required,
    )
