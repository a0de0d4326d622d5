"""From trials to a verdict: HANG and CRASH are proof; PASS is only ever a bound.

Kinds:
  HANG            no END to ``stats`` on any new connection, for 3 s of fresh probes after
                  the flood drained, with a descriptor free: proof, with evidence.
  CRASH           the server died by a signal.
  PASS            no hang: stated as "0 hangs in T s over n trials; rate < 3/T at 95%".
  INCONCLUSIVE    the soak never reached the buggy path (no EMFILE episode), so its
                  clean run says nothing.

One bug at a time: a hang with another *named* class than the scenario hunts (say a
lost wake-up while hunting the self-deadlock) is a real bug, but not this one. It is
listed with its evidence, its trial counts as clean exposure up to the hang, and the
verdict on the scenario's bug stands (a PASS then exits 13, not 0).
  NOT APPLICABLE  the scenario's symbols are not in this build.
  ERROR           a harness problem; no verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from verifier.errors import ExitStatus
from verifier.evidence.classify import UNKNOWN
from verifier.verdict.stats import describe_bound, rate_upper_bound

HANG, CRASH, PASS, INCONCLUSIVE, NOT_APPLICABLE, ERROR = (
    "HANG",
    "CRASH",
    "PASS",
    "INCONCLUSIVE",
    "NOT APPLICABLE",
    "ERROR",
)


@dataclass
class TrialResult:
    index: int
    outcome: str  # "hang", "crash", "clean", "error"
    soak_s: float  # seconds of flood (the exposure)
    run_dir: str
    time_to_hang_s: float | None = None  # flood start -> first failed probe (later confirmed)
    last_good_s: float | None = None  # flood start -> last good reply on a new connection
    detection_latency_s: float | None = None  # last good reply -> HANG confirmed
    verdict_at_s: float | None = None  # flood start -> HANG confirmed
    hang_class: str | None = None
    liveness: str | None = None
    signature: dict[str, Any] | None = None
    crash_signal: str | None = None
    crash_backtrace: str = ""
    emfile_episodes: int = 0  # listen_disabled_num increase during the soak
    amplifier_triggers: int = 0
    saturation_episodes: int = 0  # failed probes that recovered after the drain
    flood: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    kind: str
    headline: str
    status: ExitStatus
    bound: str = ""
    hang_class: str | None = None
    rate_upper_bound_per_s: float | None = None
    total_soak_s: float = 0.0
    trials: int = 0
    other_bugs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = int(self.status)
        return data


def is_other_bug(trial: TrialResult, expected_class: str) -> bool:
    """A hang named as another class than the scenario hunts (an unnamed one could be
    this bug in another shape, so it is never set aside)."""
    return (
        trial.outcome == "hang"
        and expected_class != UNKNOWN
        and trial.hang_class not in (None, UNKNOWN, expected_class)
    )


def exposure_s(trial: TrialResult) -> float:
    """Seconds of flood the trial ran clean: up to the first failed probe if it hung."""
    if trial.outcome == "hang" and trial.time_to_hang_s is not None:
        return min(trial.soak_s, trial.time_to_hang_s)
    return trial.soak_s


def expectation_met(verdict: Verdict, expect: str | None) -> bool:
    """``--expect pass`` (the scenario's bug did not show; other bugs are reported, not
    counted), ``hang``, ``hang:CLASS`` (also met by another bug of that class) or ``crash``."""
    if not expect:
        return True
    kind, _, wanted_class = expect.partition(":")
    if kind == "pass":
        return verdict.kind == PASS
    if kind == "hang":
        if verdict.kind == HANG and (not wanted_class or verdict.hang_class == wanted_class):
            return True
        return bool(wanted_class) and any(b["class"] == wanted_class for b in verdict.other_bugs)
    if kind == "crash":
        return verdict.kind == CRASH
    return False


def decide(
    trials: list[TrialResult],
    *,
    expected_class: str,
    confidence: float = 0.95,
    amplified: bool = False,
) -> Verdict:
    """Combine trials (the run stops at the first crash or hang of this bug) into one verdict."""
    others = [t for t in trials if is_other_bug(t, expected_class)]
    other_bugs = [
        {
            "trial": t.index,
            "class": t.hang_class,
            "time_to_hang_s": t.time_to_hang_s,
            "evidence": f"{t.run_dir}/evidence",
        }
        for t in others
    ]
    also = "".join(
        f"; but another bug hung: {b['class']} (trial {b['trial']}, "
        f"{b['time_to_hang_s'] or 0:.1f} s into the flood)"
        for b in other_bugs
    )
    soak = sum(exposure_s(t) for t in trials)
    for trial in trials:
        if is_other_bug(trial, expected_class):
            continue
        if trial.outcome == "crash":
            return Verdict(
                CRASH,
                f"CRASH: the server died by {trial.crash_signal} after {trial.soak_s:.1f} s "
                f"of flood (trial {trial.index}){also}",
                ExitStatus.HANG,
                total_soak_s=soak,
                trials=len(trials),
                other_bugs=other_bugs,
            )
        if trial.outcome == "hang":
            other = trial.hang_class != expected_class
            note = f" (not the scenario's {expected_class})" if other else ""
            return Verdict(
                HANG,
                f"HANG: {trial.hang_class}{note}, {trial.liveness}; no answer on new "
                f"connections after {trial.time_to_hang_s:.1f} s of flood (trial {trial.index})"
                + also,
                ExitStatus.HANG,
                hang_class=trial.hang_class,
                total_soak_s=soak,
                trials=len(trials),
                other_bugs=other_bugs,
            )
    errors = [t for t in trials if t.outcome == "error"]
    if errors:
        return Verdict(
            ERROR,
            f"ERROR: {errors[0].error}",
            ExitStatus.HARNESS_ERROR,
            total_soak_s=soak,
            trials=len(trials),
        )
    episodes = sum(t.emfile_episodes for t in trials)
    triggers = sum(t.amplifier_triggers for t in trials)
    if episodes == 0:
        return Verdict(
            INCONCLUSIVE,
            "INCONCLUSIVE: the flood never drove the server to EMFILE (listen_disabled_num "
            "stayed 0), so this soak did not exercise the bug path" + also,
            ExitStatus.INCONCLUSIVE,
            total_soak_s=soak,
            trials=len(trials),
            other_bugs=other_bugs,
        )
    if amplified and triggers == 0:
        return Verdict(
            INCONCLUSIVE,
            "INCONCLUSIVE: the amplifier never fired, so the race window was never stretched"
            + also,
            ExitStatus.INCONCLUSIVE,
            total_soak_s=soak,
            trials=len(trials),
            other_bugs=other_bugs,
        )
    bound = describe_bound(0, soak, len(trials), confidence)
    extra = f"; {episodes:,} EMFILE episodes"
    extra += f", {triggers:,} amplifier triggers" if amplified else ""
    return Verdict(
        PASS,
        f"PASS (bounded): {bound}{extra}{also}",
        ExitStatus.OTHER_HANG if other_bugs else ExitStatus.SUCCESS,
        bound=bound,
        rate_upper_bound_per_s=rate_upper_bound(soak, confidence),
        total_soak_s=soak,
        trials=len(trials),
        other_bugs=other_bugs,
    )
