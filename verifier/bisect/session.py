"""The bisect use case: check the endpoints, then let the planner pick commits and soak
lengths until the culprit's posterior reaches the confidence.

Observations are soaks ("no hang in t s" / "hung after t s"), not pass/fail. A hang of
another bug than the bad end's is listed, never used as evidence.

``open_session`` is the one way in: it keys the saved state by everything that changes
the evidence (the range, patches, scenario file, amplifier, load, flags, toolchain), so a
resume never mixes soaks taken under another load, and it holds the state folder's lock
for the whole session, so two identical bisects never write one state.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verifier.bisect.commits import CommitRange
from verifier.bisect.dispatch import Role, good_end_soak_s
from verifier.bisect.model import Soak
from verifier.bisect.observation import Observation, judged
from verifier.bisect.on_cluster import run_on_cluster
from verifier.bisect.planner import FlakyBisector, Result, Step
from verifier.bisect.remote import RemoteTester
from verifier.bisect.state import BisectState, Phase, StepRow, load, save
from verifier.bisect.tester import CommitTester
from verifier.build.builder import BuildRequest
from verifier.cluster.dask import DaskCluster
from verifier.errors import BadInput, BadRange
from verifier.source.git_source import GitSource
from verifier.util.hashing import digest
from verifier.verdict.verdict import OtherBug
from verifier.verify import VerifyCore, VerifyOptions
from verifier.vocabulary import AmplifierKind, ObservationKind, SkipCause

Echo = Callable[[StepRow], None]
# A commit where another bug hung is soaked again (that bug is a race too) before it is
# skipped: measured, the lost wake-up cut one soak of the synthetic history's fix commit
# short, and skipping it at once left the answer ambiguous between two commits.
OTHER_BUG_TRIES = 2


AUTO_ENDPOINT_TRIES = 12  # --amplify auto: each try of the bad end stretches other points


def default_endpoint_tries(options: VerifyOptions) -> int:
    """3 soaks of the bad end; 12 with ``--amplify auto``, whose deck covers every candidate
    point within as many trials as it has points (memcached's discovery finds about a
    dozen). With a point learned before, the first try hangs and the others never run."""
    auto = options.amplify == AmplifierKind.AUTO
    return AUTO_ENDPOINT_TRIES if auto else BisectSettings.endpoint_tries


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
    other_bugs: list[OtherBug] = field(default_factory=list)


@dataclass
class Bisection:
    git: GitSource
    commits: CommitRange
    tester: CommitTester | RemoteTester
    settings: BisectSettings
    state: BisectState
    state_path: Path
    echo: Echo | None = None
    bisector: FlakyBisector = field(init=False)

    def __post_init__(self) -> None:
        self.bisector = self._restore()

    @property
    def state_dir(self) -> Path:
        return self.state_path.parent

    # -- state ---------------------------------------------------------------------------
    def _build_cost(self, index: int) -> float:
        built = self.tester.is_built(self.commits.shas[index])
        return 0.0 if built else self.settings.default_build_s

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

    def save(self) -> None:
        self.state.bisector = self.bisector.to_dict()
        save(self.state_path, self.state)

    def _row(self, index: int, obs: Observation, role: str, planned: float) -> StepRow:
        now = self.bisector.result()
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
            best_sha=self.commits.answer(now.culprit),
            best_probability=round(now.probability, 4),
            run_dir=obs.run_dir,
            cause=obs.cause,
            stretched=obs.stretched,
        )
        self.state.steps.append(row)
        if obs.other_bug is not None:
            self.state.other_bugs.append(obs.other_bug)
        if obs.cause == SkipCause.NOT_APPLICABLE:
            self.state.not_applicable.append(obs.sha)
        self.save()
        if self.echo:
            self.echo(row)
        return row

    # -- endpoints -------------------------------------------------------------------------
    def good_end_soak(self) -> float:
        return good_end_soak_s(
            self.bisector, self.settings.min_soak_s, self.settings.endpoint_soak_s
        )

    def check_endpoints(self) -> None:
        if self.state.phase != Phase.ENDPOINTS:
            return
        budget = self.settings.endpoint_soak_s
        if self.state.reference_bug_key is None:
            for _ in range(self.settings.endpoint_tries):
                self.bad_end_answer(self.tester.test(self.commits.bad, budget, None), budget)
                if self.state.reference_bug_key is not None:
                    break
            if self.state.reference_bug_key is None:
                raise self.not_bad()
        good_budget = self.good_end_soak()
        obs = self.tester.test(self.commits.good, good_budget, self.state.reference_bug_key)
        self.good_end_answer(obs, good_budget)

    def bad_end_answer(self, obs: Observation, budget: float) -> None:
        """Record one soak of the bad end; its first hang names the reference bug."""
        if obs.kind == ObservationKind.SKIP:
            raise BadRange(f"the bad end {obs.sha[:12]} cannot be tested: {obs.reason}")
        obs = judged(obs, self.state.reference_bug_key)
        if obs.evidence:  # another bug's hang says nothing about this one
            hung = obs.kind == ObservationKind.HANG
            self.bisector.record_endpoint(Soak(self.commits.n, obs.seconds, hung))
        if obs.kind == ObservationKind.HANG and self.state.reference_bug_key is None:
            self.state.reference_bug_key = obs.bug_key
            self.state.reference_class = self.tester.reference_class = obs.hang_class
        self._row(self.commits.n, obs, Role.BAD_END, budget)

    def not_bad(self) -> BadRange:
        tries, budget = self.settings.endpoint_tries, self.settings.endpoint_soak_s
        return BadRange(
            f"the bad end {self.commits.bad[:12]} did not hang in {tries} x {budget:.0f} s "
            f"with scenario {self.tester.scenario.name}: it is not bad for this bug "
            "(try --amplify, a longer --endpoint-soak, or another --bad)"
        )

    def good_end_answer(self, obs: Observation, good_budget: float) -> None:
        """Record the good end's soak (judged against the reference bug): a hang of the same
        bug stops the bisect; then the search may conclude."""
        obs = judged(obs, self.state.reference_bug_key)
        if obs.kind == ObservationKind.HANG:
            raise BadRange(
                f"the good end {obs.sha[:12]} hangs too, with the same bug "
                f"({self.state.reference_class}) after {obs.seconds:.1f} s: the bug is older "
                "than --good"
                + (" (or the fix is newer than --good)" if self.commits.find_fix else "")
            )
        if obs.kind == ObservationKind.CLEAN:
            self.bisector.record_endpoint(Soak(0, obs.seconds, False))
        else:
            self.state.notes.append(
                f"good end {obs.sha[:12]}: {obs.kind} ({obs.reason}); assumed good as given"
            )
        self._row(0, obs, Role.GOOD_END, good_budget)
        self.state.phase = Phase.SEARCH
        self.save()

    # -- search ----------------------------------------------------------------------------
    def search(self) -> None:
        while self.state.phase == Phase.SEARCH:
            step = self.bisector.next_step()
            if step is None:
                self.state.phase = Phase.DONE
                self.save()
                return
            sha = self.commits.shas[step.index]
            obs = self.tester.test(sha, step.soak_seconds, self.state.reference_bug_key)
            self.take(step, obs)

    def take(self, step: Step, obs: Observation) -> None:
        """Record one soak the planner asked for (evidence, a skip, or another bug's hang)."""
        sha = self.commits.shas[step.index]
        if obs.evidence:
            self.bisector.record(Soak(step.index, obs.seconds, obs.kind == ObservationKind.HANG))
        elif step.index == self.commits.n:
            raise BadRange(f"the bad end stopped being testable: {obs.reason}")
        elif obs.kind != ObservationKind.OTHER_BUG or self._other_bugs(sha) >= OTHER_BUG_TRIES:
            self.bisector.record_skip(step.index)
        # else: another bug cut this soak short; the next may not (it is tested again)
        role = "calibration" if step.calibration else "step"
        self._row(step.index, obs, role, step.soak_seconds)

    def note(self, tester: RemoteTester) -> None:
        """Lost workers go into the report's notes, once each."""
        for note in tester.notes:
            if note not in self.state.notes:
                self.state.notes.append(note)
                self.save()

    def _other_bugs(self, sha: str) -> int:
        """Soaks of ``sha`` so far that another bug cut short (this one included)."""
        done = [row for row in self.state.steps if row.sha == sha]
        return 1 + sum(row.kind == ObservationKind.OTHER_BUG for row in done)

    def run(self) -> Conclusion:
        if isinstance(self.tester, RemoteTester) and self.tester.machines > 1:
            run_on_cluster(self, self.tester)  # the endpoints at once, then k soaks at a time
        else:
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


def resume_key(
    source_label: str,
    commits: CommitRange,
    request: BuildRequest,
    options: VerifyOptions,
    settings: BisectSettings,
    toolchain: dict[str, str],
) -> tuple[dict[str, Any], str]:
    """Everything that changes what a soak shows, and its digest (the state folder name)."""
    scenario = options.scenario
    params = {
        "source": source_label,
        "good": commits.good,
        "bad": commits.bad,
        "find_fix": commits.find_fix,
        "patches": [digest(p.read_text()) for p in request.patches],
        "reverse": request.reverse,
        "cflags": request.cflags,
        "toolchain": toolchain,
        "scenario": scenario.name,
        "scenario_file": digest(scenario.path.read_text()) if scenario.path.is_file() else "",
        "workload": scenario.workload_name,
        "workload_groups": digest(repr(scenario.workload)) if scenario.workload else "",
        "flood": [scenario.flood.concurrency, [list(m) for m in scenario.flood.mix]],
        "amplify": None if options.amplify is None else str(options.amplify),
        "delay_us": options.delay_us,
        "amplify_every": options.amplify_every,
        "hunt": None if options.hunted is None else str(options.hunted),
        "threads": options.threads,
        "concurrency": options.concurrency,
        "flood_processes": options.flood_processes,
        "probe_client": options.probe_client,
        "settings": asdict(settings),
    }
    if request.sanitizer is not None or options.hunt_report is not None:  # else keys as before
        params["sanitizer"] = str(request.sanitizer or "")
        params["hunt_report"] = options.hunt_report
    if request.tls:  # a TLS build is another binary
        params["tls"] = True
    return params, digest(params)[:16]


class BisectBusy(BadInput):
    """Another bisect with the same inputs holds the state folder."""


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "?"
            raise BisectBusy(
                f"another bisect with the same inputs is running (pid {holder}); "
                f"its state is {path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass
class Session:
    bisection: Bisection
    resumed_steps: int  # steps found in the saved state (0: a fresh start)

    @property
    def state_path(self) -> Path:
        return self.bisection.state_path


@contextlib.contextmanager
def open_session(
    core: VerifyCore,
    git: GitSource,
    source_label: str,
    commits: CommitRange,
    request: BuildRequest,
    options: VerifyOptions,
    settings: BisectSettings,
    bisects_dir: Path,
    *,
    restart: bool = False,
    echo: Echo | None = None,
    cluster: DaskCluster | None = None,
    remote_source: str = "",
    shared_cache: bool = False,
) -> Iterator[Session]:
    """Open (resume, or with ``restart`` start over) the bisection of these inputs; the
    state folder is locked until the block ends. With ``cluster``, the soaks run on its
    machines (the workers find the source as ``remote_source``)."""
    toolchain = core.builder.toolchain(request.effective_cflags).identity()
    params, key = resume_key(source_label, commits, request, options, settings, toolchain)
    state_dir = bisects_dir / key
    with _exclusive(bisects_dir / f"{key}.lock"):
        if restart and state_dir.exists():
            shutil.rmtree(state_dir)
        state_path = state_dir / "state.json"
        if state_path.exists():
            state = load(state_path)
        else:
            state = BisectState(params=params, shas=list(commits.shas), find_fix=commits.find_fix)
        resumed = len(state.steps)
        tester: CommitTester | RemoteTester = CommitTester(
            core, request, options, state_dir / "runs"
        )
        tester.reference_class = state.reference_class
        if cluster is not None:
            tester = RemoteTester(cluster, tester, remote_source, request, shared_cache)
        yield Session(Bisection(git, commits, tester, settings, state, state_path, echo), resumed)
