"""The bisect use case: check the endpoints, then let the planner pick commits and soak
lengths until the culprit's posterior reaches the confidence.

Observations are soaks ("no hang in t s" / "hung after t s"), not pass/fail. A hang with
another signature than the bad end's is another bug: listed, never used as evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from verifier.bisect.commits import CommitRange
from verifier.bisect.model import Soak
from verifier.bisect.planner import FlakyBisector, Result
from verifier.bisect.state import BisectState, StepRow, save
from verifier.bisect.tester import CLEAN, HANG, OTHER_BUG, SKIP, CommitTester, Observation
from verifier.errors import BadRange
from verifier.source.git_source import GitSource

Echo = Callable[[StepRow], None]
GOOD_END_FACTOR = 5.0  # good-end soak in bad-end mean times-to-hang: e^-5 < 1% to miss a hang


@dataclass(frozen=True)
class BisectSettings:
    confidence: float = 0.95
    min_soak_s: float = 3.0
    max_soak_s: float = 60.0
    endpoint_soak_s: float = 60.0
    endpoint_tries: int = 3
    max_steps: int = 60
    default_build_s: float = 10.0


@dataclass
class Conclusion:
    result: Result
    answer: str | None  # the SHA named (introducing or fixing commit), None when ambiguous
    group: list[str]  # every commit the evidence cannot tell apart
    probability: float
    note: str = ""
    other_bugs: list[dict[str, object]] = field(default_factory=list)


class Bisection:
    def __init__(
        self,
        git: GitSource,
        commits: CommitRange,
        tester: CommitTester,
        settings: BisectSettings,
        state: BisectState,
        state_path: Path,
        echo: Echo | None = None,
    ) -> None:
        self.git = git
        self.commits = commits
        self.tester = tester
        self.settings = settings
        self.state = state
        self.state_path = state_path
        self.echo = echo
        self.bisector = self._restore()

    # -- state ---------------------------------------------------------------------------
    def _build_cost(self, index: int) -> float:
        return (
            0.0
            if self.tester.is_built(self.commits.shas[index])
            else (self.settings.default_build_s)
        )

    def _restore(self) -> FlakyBisector:
        if self.state.bisector:
            return FlakyBisector.from_dict(self.state.bisector, build_cost=self._build_cost)
        return FlakyBisector(
            self.commits.n,
            self.settings.confidence,
            max_soak_s=self.settings.max_soak_s,
            min_soak_s=self.settings.min_soak_s,
            build_cost=self._build_cost,
            default_build_s=self.settings.default_build_s,
            max_steps=self.settings.max_steps,
        )

    def _save(self) -> None:
        self.state.bisector = self.bisector.to_dict()
        save(self.state_path, self.state)

    def _row(self, index: int, obs: Observation, role: str, planned: float) -> StepRow:
        now = self.bisector.result()
        best, probability = now.culprit, now.probability
        row = StepRow(
            index=index,
            sha=obs.sha,
            subject=self.git.commit_info(obs.sha).subject,
            kind=obs.kind,
            role=role,
            seconds=round(obs.seconds, 3),
            soak_planned_s=round(planned, 3),
            build_seconds=round(obs.build_seconds, 3),
            reason=obs.reason,
            best_sha=self.commits.answer(best),
            best_probability=round(probability, 4),
            run_dir=obs.run_dir,
        )
        self.state.steps.append(row)
        if obs.kind == OTHER_BUG:
            self.state.other_bugs.append(
                {
                    "sha": obs.sha,
                    "reason": obs.reason,
                    "signature": obs.signature_key,
                    "run_dir": obs.run_dir,
                }
            )
        if obs.kind == SKIP and obs.reason.startswith("not applicable"):
            self.state.not_applicable.append(obs.sha)
        self._save()
        if self.echo:
            self.echo(row)
        return row

    # -- endpoints -------------------------------------------------------------------------
    def good_end_soak(self) -> float:
        """Long enough that the bad end, at its observed rate, would have hung with ~99%
        probability (5 mean times-to-hang); no longer than --endpoint-soak."""
        post, n = self.bisector.posterior, self.commits.n
        mean_time_to_hang = post.exposure(n) / max(1, post.hangs(n))
        wanted = GOOD_END_FACTOR * mean_time_to_hang
        return min(self.settings.endpoint_soak_s, max(self.settings.min_soak_s, wanted))

    def check_endpoints(self) -> None:
        if self.state.phase != "endpoints":
            return
        n, budget = self.commits.n, self.settings.endpoint_soak_s
        if self.state.reference_key is None:
            for _ in range(self.settings.endpoint_tries):
                obs = self.tester.test(self.commits.bad, budget, None)
                if obs.kind == SKIP:
                    raise BadRange(f"the bad end {obs.sha[:12]} cannot be tested: {obs.reason}")
                if obs.kind != OTHER_BUG:  # another bug's hang says nothing about this one
                    self.bisector.record_endpoint(Soak(n, obs.seconds, obs.kind == HANG))
                if obs.kind == HANG:
                    self.state.reference_key = obs.signature_key
                    self.state.reference_class = obs.hang_class
                self._row(n, obs, "bad end", budget)
                if obs.kind == HANG:
                    break
            if self.state.reference_key is None:
                tries = self.settings.endpoint_tries
                raise BadRange(
                    f"the bad end {self.commits.bad[:12]} did not hang in {tries} x {budget:.0f} s "
                    f"with scenario {self.tester.scenario.name}: it is not bad for this bug "
                    "(try --amplify, a longer --endpoint-soak, or another --bad)"
                )
        good_budget = self.good_end_soak()
        obs = self.tester.test(self.commits.good, good_budget, self.state.reference_key)
        if obs.kind == HANG:
            raise BadRange(
                f"the good end {obs.sha[:12]} hangs too, with the same signature "
                f"({self.state.reference_class}) after {obs.seconds:.1f} s: the bug is older "
                "than --good"
                + (" (or the fix is newer than --good)" if self.commits.find_fix else "")
            )
        if obs.kind == CLEAN:
            self.bisector.record_endpoint(Soak(0, obs.seconds, False))
        else:
            self.state.notes.append(
                f"good end {obs.sha[:12]}: {obs.kind} ({obs.reason}); assumed good as given"
            )
        self._row(0, obs, "good end", good_budget)
        self.state.phase = "search"
        self._save()

    # -- search ----------------------------------------------------------------------------
    def search(self) -> None:
        while self.state.phase == "search":
            step = self.bisector.next_step()
            if step is None:
                self.state.phase = "done"
                self._save()
                return
            sha = self.commits.shas[step.index]
            obs = self.tester.test(sha, step.soak_seconds, self.state.reference_key)
            if obs.kind in (HANG, CLEAN):
                self.bisector.record(Soak(step.index, obs.seconds, obs.kind == HANG))
            elif step.index == self.commits.n:
                raise BadRange(f"the bad end stopped being testable: {obs.reason}")
            else:
                self.bisector.record_skip(step.index)
            role = "calibration" if step.calibration else "step"
            self._row(step.index, obs, role, step.soak_seconds)

    def run(self) -> Conclusion:
        self.check_endpoints()
        self.search()
        return self.conclude()

    def conclude(self) -> Conclusion:
        return conclude(
            self.bisector, self.commits, self.state, self.tester.scenario.requires_symbols
        )


def conclude(
    bisector: FlakyBisector, commits: CommitRange, state: BisectState, symbols: tuple[str, ...]
) -> Conclusion:
    """The answer from the posterior; pure, so a saved state can be replayed."""
    result = bisector.result()
    group = list(result.group)
    note = ""
    skipped_na = {commits.shas.index(s) for s in state.not_applicable if s in commits.shas}
    if len(group) > 1 and all(i in skipped_na for i in group[:-1]):
        # The commits in doubt lack the code the scenario exercises, so they cannot have
        # this bug; the first one that has the code and hangs is the culprit.
        note = (
            f"the other candidates lack the scenario's code ({', '.join(symbols)}), "
            "so they cannot have this bug"
        )
        group = group[-1:]
    return Conclusion(
        result=result,
        answer=commits.answer(group[0]) if len(group) == 1 else None,
        group=[commits.answer(i) for i in group],
        probability=result.group_probability,
        note=note,
        other_bugs=list(state.other_bugs),
    )
