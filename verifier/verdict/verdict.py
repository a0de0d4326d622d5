"""From trials to a verdict: HANG and CRASH are proof; PASS is only ever a bound.

Kinds (``VerdictKind``):
  HANG            no END to ``stats`` on any new connection, and the hang is proven: by a
                  lock cycle or the process state at once, else by 3 s of fresh probes
                  after the flood drained, with a descriptor free.
  CRASH           the server died by a signal, or a sanitizer ended it (ASan halts at
                  its first report): the class and stacks come from the report.
  WRONG RESULT    a sanitizer report that does not end the server (TSan, UBSan) and is
                  the one hunted (``--expect sanitizer[:SIGNATURE|KIND|CLASS]``): TSan
                  reports many benign races in memcached's counters, so only the hunted
                  one is a verdict; the others are counted in the PASS line.
  PASS            no hang: stated as "0 hangs in T s over n trials; rate < 3/T at 95%",
                  T counting only the seconds the flood ran at full strength.
  INCONCLUSIVE    the soak never reached the buggy path (no EMFILE episode), so its
                  clean run says nothing.
  NOT APPLICABLE  the scenario's symbols are not in this build.
  ERROR           a harness problem; no verdict.

One bug at a time: a hang with another *named* class than the one hunted (say a lost
wake-up while hunting the self-deadlock) is a real bug, but not this one. It is listed
with its evidence, its trial counts as clean exposure up to the hang, and the verdict on
the hunted bug stands (a PASS then exits 13, not 0). The exit status of every kind is
decided in one place, ``Verdict.status``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from verifier.errors import BadInput, ExitStatus
from verifier.evidence.sanitizer import SanitizerFinding, distinct
from verifier.records.trial import TrialResult
from verifier.stress.tally import ABANDONED
from verifier.verdict.stats import describe_bound, rate_upper_bound
from verifier.vocabulary import HangClass, HangProof, TrialOutcome, VerdictKind, WrongClass

_STATUS = {
    VerdictKind.HANG: ExitStatus.BUG_SEEN,
    VerdictKind.CRASH: ExitStatus.BUG_SEEN,
    VerdictKind.WRONG: ExitStatus.BUG_SEEN,
    VerdictKind.PASS: ExitStatus.SUCCESS,
    VerdictKind.INCONCLUSIVE: ExitStatus.INCONCLUSIVE,
    VerdictKind.NOT_APPLICABLE: ExitStatus.NOT_APPLICABLE,
    VerdictKind.ERROR: ExitStatus.HARNESS_ERROR,
}


# what still works, for the classes where "listener dead, workers alive" would mislead
_STATE = {
    HangClass.STUCK_SHUTDOWN: "the process did not exit",
    HangClass.STUCK_PROGRESS: "clients still served",
    HangClass.PART_HUNG: "the rest still answers",
}


@dataclass(frozen=True)
class OtherBug:
    """A hang (or crash) of another bug than the one hunted: listed, never evidence."""

    outcome: TrialOutcome  # HANG or CRASH
    hang_class: HangClass | None  # None for a crash
    bug_key: str
    time_to_hang_s: float | None
    evidence: str  # the run directory holding its evidence
    trial: int | None = None  # verify: the trial it showed in
    sha: str | None = None  # bisect: the commit it showed on
    reason: str = ""

    @classmethod
    def from_trial(cls, trial: TrialResult, sha: str | None = None, reason: str = "") -> OtherBug:
        diagnosis = trial.diagnosis
        return cls(
            outcome=trial.outcome,
            hang_class=trial.hang_class,
            bug_key=diagnosis.bug_key if diagnosis else crash_key(trial),
            time_to_hang_s=trial.time_to_hang_s
            if trial.outcome == TrialOutcome.HANG
            else trial.soak_s,
            evidence=trial.run_dir,
            trial=None if sha else trial.index,
            sha=sha,
            reason=reason,
        )

    @property
    def label(self) -> str:
        return str(self.hang_class) if self.hang_class else f"crash ({self.bug_key})"

    def describe(self) -> str:
        where = f"trial {self.trial}" if self.trial is not None else f"commit {self.sha or '?'}"
        return f"{self.label} ({where}, {self.time_to_hang_s or 0:.1f} s into the flood)"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome),
            "class": None if self.hang_class is None else str(self.hang_class),
            "bug_key": self.bug_key,
            "time_to_hang_s": self.time_to_hang_s,
            "evidence": self.evidence,
            "trial": self.trial,
            "sha": self.sha,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OtherBug:
        return cls(
            TrialOutcome(data["outcome"]),
            HangClass(data["class"]) if data.get("class") else None,
            data["bug_key"],
            data.get("time_to_hang_s"),
            data["evidence"],
            data.get("trial"),
            data.get("sha"),
            data.get("reason", ""),
        )


@dataclass
class Verdict:
    kind: VerdictKind
    headline: str
    bound: str = ""
    hang_class: HangClass | None = None
    proof: HangProof | None = None
    rate_upper_bound_per_s: float | None = None
    total_soak_s: float = 0.0
    trials: int = 0
    other_bugs: list[OtherBug] = field(default_factory=list)
    wrong_class: WrongClass | None = None  # WRONG RESULT: what the witness shows
    sanitizer: SanitizerFinding | None = None  # the report that is the verdict's proof

    @property
    def status(self) -> ExitStatus:
        """The exit status of this verdict (the one place it is decided)."""
        if self.kind == VerdictKind.PASS and self.other_bugs:
            return ExitStatus.OTHER_HANG
        return _STATUS[self.kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "headline": self.headline,
            "status": int(self.status),
            "bound": self.bound,
            "hang_class": None if self.hang_class is None else str(self.hang_class),
            "proof": None if self.proof is None else str(self.proof),
            "rate_upper_bound_per_s": self.rate_upper_bound_per_s,
            "total_soak_s": self.total_soak_s,
            "trials": self.trials,
            "other_bugs": [b.to_json() for b in self.other_bugs],
            "wrong_class": None if self.wrong_class is None else str(self.wrong_class),
            "sanitizer": self.sanitizer.to_json() if self.sanitizer else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            VerdictKind(data["kind"]),
            data["headline"],
            data.get("bound", ""),
            HangClass(data["hang_class"]) if data.get("hang_class") else None,
            HangProof(data["proof"]) if data.get("proof") else None,
            data.get("rate_upper_bound_per_s"),
            float(data.get("total_soak_s", 0.0)),
            int(data.get("trials", 0)),
            [OtherBug.from_json(b) for b in data.get("other_bugs", [])],
            WrongClass(data["wrong_class"]) if data.get("wrong_class") else None,
            SanitizerFinding.from_json(data["sanitizer"]) if data.get("sanitizer") else None,
        )


class ExpectKind(enum.StrEnum):
    PASS = "pass"
    HANG = "hang"
    CRASH = "crash"
    WRONG = "wrong"
    SANITIZER = "sanitizer"


@dataclass(frozen=True)
class Expectation:
    """``--expect pass|hang|hang:CLASS|crash|sanitizer[:REPORT]`` (for CI), parsed once.
    REPORT is a sanitizer report's signature, kind or class (``data-race``)."""

    kind: ExpectKind
    hang_class: HangClass | None = None
    wrong_class: WrongClass | None = None
    report: str | None = None  # sanitizer: the report hunted ("" for any)

    @classmethod
    def parse(cls, text: str) -> Expectation:
        kind, sep, wanted = text.strip().partition(":")
        if kind == ExpectKind.SANITIZER:
            return cls(ExpectKind.SANITIZER, report=wanted.strip())
        usage = "pass, crash, hang, hang:CLASS, wrong or wrong:CLASS"
        try:
            expect = ExpectKind(kind)
            if expect == ExpectKind.WRONG:
                parsed = cls(expect, None, WrongClass(wanted) if wanted else None)
            else:
                parsed = cls(expect, HangClass(wanted) if wanted else None)
        except ValueError:
            hangs = ", ".join(c.value for c in HangClass)
            wrongs = ", ".join(c.value for c in WrongClass)
            raise BadInput(
                f"bad --expect {text!r} ({usage}; hang classes: {hangs}; wrong: {wrongs})"
            ) from None
        if (sep and not wanted) or (
            wanted and parsed.kind not in (ExpectKind.HANG, ExpectKind.WRONG)
        ):
            raise BadInput(f"bad --expect {text!r} ({usage})")
        return parsed

    def __str__(self) -> str:
        if self.report:
            return f"{self.kind}:{self.report}"
        detail = self.hang_class or self.wrong_class
        return f"{self.kind}:{detail}" if detail else str(self.kind)

    def met_by(self, verdict: Verdict) -> bool:
        """``pass``: the hunted bug did not show (other bugs are reported, not counted);
        ``hang``: any hang; ``hang:CLASS``: that class, also as another bug; ``crash``."""
        if self.kind == ExpectKind.PASS:
            return verdict.kind == VerdictKind.PASS
        if self.kind == ExpectKind.CRASH:
            return verdict.kind == VerdictKind.CRASH
        if self.kind == ExpectKind.WRONG:
            return verdict.kind == VerdictKind.WRONG and self.wrong_class in (
                None,
                verdict.wrong_class,
            )
        if self.kind == ExpectKind.SANITIZER:
            found = verdict.sanitizer
            return found is not None and (not self.report or found.matches(self.report))
        if verdict.kind == VerdictKind.HANG and self.hang_class in (None, verdict.hang_class):
            return True
        return self.hang_class is not None and any(
            b.hang_class == self.hang_class for b in verdict.other_bugs
        )


def is_other_bug(
    trial: TrialResult, hunted: HangClass | None, set_aside: frozenset[HangClass] = frozenset()
) -> bool:
    """A hang named as another class than the one hunted, or as one the scenario sets
    aside (``set_aside``: another bug its flood meets first). An unnamed hang could be
    this bug in another shape, so it is never set aside; with nothing hunted and nothing
    set aside, no hang is."""
    if trial.outcome != TrialOutcome.HANG or trial.hang_class in (None, HangClass.UNKNOWN):
        return False
    if trial.hang_class == hunted:
        return False
    return trial.hang_class in set_aside or hunted not in (None, HangClass.UNKNOWN)


def is_this_bug(
    trial: TrialResult, hunted: HangClass | None, set_aside: frozenset[HangClass] = frozenset()
) -> bool:
    """A crash, a wrong answer, or a hang that is not another bug's: proof of the bug."""
    return trial.outcome in (TrialOutcome.CRASH, TrialOutcome.WRONG) or (
        trial.outcome == TrialOutcome.HANG and not is_other_bug(trial, hunted, set_aside)
    )


def clients_seen(trials: list[TrialResult]) -> dict[str, int]:
    """Answers without an error, per command, over every trial's client groups (and the
    workload's events, as "SIGHUP" or "pause")."""
    seen: dict[str, int] = {}
    for trial in trials:
        for command in trial.clients.commands if trial.clients else ():
            seen[command.command] = seen.get(command.command, 0) + command.ok
        for event in trial.events:
            name = event.split(" at ")[0]
            seen[name] = seen.get(name, 0) + 1
    return seen


def clients_left_unread(trials: list[TrialResult]) -> dict[str, int]:
    """Requests sent on a live connection and left unread on purpose (a group's
    ``abandon``): such a group never reads an answer, so this is all it can show."""
    unread: dict[str, int] = {}
    for trial in trials:
        for command in trial.clients.commands if trial.clients else ():
            if command.counts.get(ABANDONED):
                unread[command.command] = unread.get(command.command, 0) + command.counts[ABANDONED]
    return unread


def describe_seen(seen: dict[str, int], limit: int = 10) -> str:
    """ "12,400 incr, 3,100 slabs_reassign, 40 watch, 2 SIGUSR1" (most frequent first)."""
    ranked = sorted(((n, c) for c, n in seen.items() if n), reverse=True)
    parts = [f"{n:,} {c}" for n, c in ranked]
    more = len(parts) - limit
    return ", ".join(parts[:limit]) + (f" and {more} more" if more > 0 else "")


def crash_key(trial: TrialResult) -> str:
    """A crash's bug key: the sanitizer report's signature when one ended the server."""
    finding = trial.fatal_finding
    return f"sanitizer:{finding.signature}" if finding else f"crash:{trial.crash_signal}"


def reported(trial: TrialResult, hunted_report: str | None) -> SanitizerFinding | None:
    """The report that proves the bug in ``trial``: the one that ended the server, else,
    when a report is hunted, the first that matches it ("": any)."""
    if trial.fatal_finding is not None:
        return trial.fatal_finding
    if hunted_report is None:
        return None
    return next((f for f in trial.sanitizer if not hunted_report or f.matches(hunted_report)), None)


def _unhunted_note(trials: list[TrialResult]) -> str:
    """How many sanitizer reports a run saw that nothing hunted (TSan's benign races)."""
    findings = [f for t in trials for f in t.sanitizer]
    if not findings:
        return ""
    signatures = distinct(findings)
    return (
        f"{findings[0].tool} sanitizer: {len(findings)} reports, {len(signatures)} "
        f"signatures, none hunted (--expect sanitizer:SIGNATURE hunts one; top: "
        f"{next(iter(signatures))})"
    )


def exposure_s(trial: TrialResult) -> float:
    """Seconds of full-strength flood the trial ran clean: up to the first failed probe."""
    if trial.outcome == TrialOutcome.HANG and trial.time_to_hang_s is not None:
        return min(trial.soak_s, trial.time_to_hang_s)
    return trial.soak_s


def decide(
    trials: list[TrialResult],
    *,
    hunted: HangClass | None,
    hunted_report: str | None = None,
    confidence: float = 0.95,
    amplified: bool = False,
    pass_note: str = "",
    needs_emfile: bool = True,
    needs_commands: tuple[str, ...] = (),
    set_aside: frozenset[HangClass] = frozenset(),
) -> Verdict:
    """Combine trials (the run stops at the first crash or hang of this bug) into one
    verdict. ``pass_note`` is added to a PASS (e.g. what the auto amplifier covered).
    A clean soak says something only if it exercised what the scenario needs: EMFILE for
    the accept path (``needs_emfile``), each of ``needs_commands`` answered at least once."""
    other_bugs = [OtherBug.from_trial(t) for t in trials if is_other_bug(t, hunted, set_aside)]
    also = "".join(f"; but another bug hung: {b.describe()}" for b in other_bugs)
    soak = sum(exposure_s(t) for t in trials)
    common: dict[str, Any] = {"total_soak_s": soak, "trials": len(trials)}
    proof = next((t for t in trials if is_this_bug(t, hunted, set_aside)), None)
    if proof is not None and proof.outcome == TrialOutcome.WRONG and proof.witness is not None:
        witness = proof.witness
        return Verdict(
            VerdictKind.WRONG,
            f"WRONG RESULT: {witness.wrong} on key {witness.key} (trial {proof.index}, "
            f"{proof.time_to_hang_s or 0:.1f} s into the flood): {witness.sentence}{also}",
            wrong_class=witness.wrong,
            other_bugs=other_bugs,
            **common,
        )
    if proof is not None and proof.fatal_finding is not None:
        found = proof.fatal_finding
        return Verdict(
            VerdictKind.CRASH,
            f"CRASH: {found.finding_class} ({found.tool} sanitizer, {found.signature}) after "
            f"{proof.soak_s:.1f} s of flood (trial {proof.index}){also}",
            other_bugs=other_bugs,
            sanitizer=found,
            **common,
        )
    if proof is not None and proof.outcome == TrialOutcome.CRASH:
        said = f' ("{proof.crash_message}")' if proof.crash_message else ""
        return Verdict(
            VerdictKind.CRASH,
            f"CRASH: the server died by {proof.crash_signal}{said} after {proof.soak_s:.1f} s "
            f"of flood (trial {proof.index}){also}",
            other_bugs=other_bugs,
            **common,
        )
    if proof is not None:
        hang_class = proof.hang_class or HangClass.UNKNOWN
        note = f" (not the scenario's {hunted})" if hunted and hang_class != hunted else ""
        how = f", proven by {proof.proof}" if proof.proof else ""
        state = _STATE.get(hang_class, str(proof.liveness))
        return Verdict(
            VerdictKind.HANG,
            f"HANG: {hang_class}{note}, {state}; hung after "
            f"{proof.time_to_hang_s or 0:.1f} s of flood (trial {proof.index}{how}){also}",
            hang_class=hang_class,
            proof=proof.proof,
            other_bugs=other_bugs,
            sanitizer=reported(proof, hunted_report),  # e.g. TSan's inversion before it
            **common,
        )
    hit = next(((t, f) for t in trials if (f := reported(t, hunted_report))), None)
    if hit is not None:
        trial, found = hit
        return Verdict(
            VerdictKind.WRONG,
            f"WRONG RESULT: {found.finding_class} reported by the {found.tool} sanitizer "
            f"under the flood ({found.signature}; trial {trial.index}){also}",
            other_bugs=other_bugs,
            sanitizer=found,
            **common,
        )
    pass_note = "; ".join(n for n in (pass_note, _unhunted_note(trials)) if n)
    errors = [t for t in trials if t.outcome == TrialOutcome.ERROR]
    if errors:
        return Verdict(VerdictKind.ERROR, f"ERROR: {errors[0].error}", **common)
    episodes = sum(t.emfile_episodes for t in trials)
    triggers = sum(t.amplifier_triggers for t in trials)
    ended = [
        f"the flood of trial {t.index} ended early ({t.flood.ended_early}); "
        f"only its {t.soak_s:.1f} s at full strength count"
        for t in trials
        if t.flood is not None and t.flood.ended_early
    ]
    caveats = "".join(f"; {text}" for text in ended)
    seen, unread = clients_seen(trials), clients_left_unread(trials)
    missing = [c for c in needs_commands if seen.get(c, 0) == 0 and unread.get(c, 0) == 0]
    if missing:
        return Verdict(
            VerdictKind.INCONCLUSIVE,
            f"INCONCLUSIVE: the clients never had {', '.join(missing)} answered, so this soak "
            "did not exercise what the scenario needs" + caveats + also,
            other_bugs=other_bugs,
            **common,
        )
    if needs_emfile and episodes == 0:
        return Verdict(
            VerdictKind.INCONCLUSIVE,
            "INCONCLUSIVE: the flood never drove the server to EMFILE (listen_disabled_num "
            "stayed 0), so this soak did not exercise the bug path" + caveats + also,
            other_bugs=other_bugs,
            **common,
        )
    if amplified and triggers == 0:
        return Verdict(
            VerdictKind.INCONCLUSIVE,
            "INCONCLUSIVE: the amplifier never fired, so the race window was never stretched"
            + caveats
            + also,
            other_bugs=other_bugs,
            **common,
        )
    bound = describe_bound(0, soak, len(trials), confidence)
    extra = f"; {episodes:,} EMFILE episodes" if needs_emfile or episodes else ""
    extra += f", {triggers:,} amplifier triggers" if amplified else ""
    extra += f"; {pass_note}" if pass_note else ""
    extra += f"; the clients saw {describe_seen(seen)}" if any(seen.values()) else ""
    extra += f"; sent and left unread: {describe_seen(unread)}" if unread else ""
    checks = [t.check for t in trials if t.check is not None]
    if checks:
        ops, unknown = sum(c.ops for c in checks), sum(len(c.unknown_keys) for c in checks)
        extra += f"; no wrong answer in {ops:,} checked operations"
        extra += f" ({unknown} keys not judged: checker budget spent)" if unknown else ""
    return Verdict(
        VerdictKind.PASS,
        f"PASS (bounded): {bound}{extra}{caveats}{also}",
        bound=bound,
        rate_upper_bound_per_s=rate_upper_bound(soak, confidence),
        other_bugs=other_bugs,
        **common,
    )
